#!/bin/bash
# Simcenter STAR-CCM+ batch run, rendered by the engine; every value is shell-quoted.
# A stale stop file would end the new run at once (the engine also cleans it before a restart).
rm -f ABORT
# STAR-CCM+ starts its ranks over ssh with its own MPI; Open MPI forwards only listed variables.
export OMPI_MCA_mca_base_env_list="E2E_RUN_TAG${OMPI_MCA_mca_base_env_list:+;$OMPI_MCA_mca_base_env_list}"
# exec: the launcher itself gets the run's signals, and its exit code is the run's.
exec starccm+ -batch run -np 12 -machinefile machinefile -rsh ssh -mpi intel pipe@00120.sim > starccm-2.log 2>&1
