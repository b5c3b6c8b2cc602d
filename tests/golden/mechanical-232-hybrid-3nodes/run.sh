#!/bin/bash
# Ansys Mechanical APDL batch run (distributed memory), rendered by the engine; every value is shell-quoted.
# The launcher starts its ranks over ssh through its MPI: Intel MPI passes the whole environment on,
# Open MPI only the variables listed here, so the run tag reaches every rank either way.
export OMPI_MCA_mca_base_env_list="E2E_RUN_TAG${OMPI_MCA_mca_base_env_list:+;$OMPI_MCA_mca_base_env_list}"
# exec: the launcher itself gets the run's signals, and its exit code is the run's.
exec ansys232 -b -dis -np 6 -machines node1.cluster:2:node2.cluster:2:node3.cluster:2 -mpi openmpi -nt 2 -m 4096 -j beam -dir . -s noread -p ansys -i beam.dat -o beam-1.out > beam-1.stdout 2>&1
