#!/bin/bash
# Ansys Mechanical APDL batch run (distributed memory), rendered by the engine; every value is shell-quoted.
# The launcher starts its ranks over ssh through its MPI: Intel MPI passes the whole environment on,
# Open MPI only the variables listed here, so the run tag reaches every rank either way.
export OMPI_MCA_mca_base_env_list="E2E_RUN_TAG${OMPI_MCA_mca_base_env_list:+;$OMPI_MCA_mca_base_env_list}"
# exec: the launcher itself gets the run's signals, and its exit code is the run's.
exec ansys251 -b -dis -np 12 -machines node1.cluster:4:node2.cluster:4:node3.cluster:4 -mpi intelmpi -j beam -dir . -s noread -i restart-2.inp -o beam-2.out > beam-2.stdout 2>&1
