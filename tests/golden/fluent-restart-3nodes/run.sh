#!/bin/bash
# Ansys Fluent batch run, rendered by the engine (every value below is shell-quoted by the renderer).
# Licence variables come from the wrapper's environment. Fluent starts its ranks itself (ssh + the chosen MPI):
# Intel MPI hands the whole environment to the ranks; Open MPI only the variables listed here.
export OMPI_MCA_mca_base_env_list="E2E_RUN_TAG${OMPI_MCA_mca_base_env_list:+;$OMPI_MCA_mca_base_env_list}"
# exec: the launcher itself gets the run's signals, and its exit code is the run's.
exec fluent 3ddp -g -t12 -cnf=fluent.hosts -mpi=intel -ssh -i run-2.jou > fluent-2.trn 2>&1
