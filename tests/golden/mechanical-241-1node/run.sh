#!/bin/bash
# Ansys Mechanical APDL batch run (distributed memory), rendered by the engine; every value is shell-quoted.
# The launcher starts its ranks over ssh through its MPI: Intel MPI passes the whole environment on,
# Open MPI only the variables listed here, so the run tag reaches every rank either way.
export OMPI_MCA_mca_base_env_list="E2E_RUN_TAG${OMPI_MCA_mca_base_env_list:+;$OMPI_MCA_mca_base_env_list}"
# exec: the launcher itself gets the run's signals, and its exit code is the run's.
exec ansys241 -b -dis -np 4 -machines localhost:4 -mpi intelmpi -j beam -dir . -s noread -i beam.dat -o beam-1.out > beam-1.stdout 2>&1
