#!/bin/bash
# Ansys Electronics Desktop batch solve, rendered by the engine; every value is shell-quoted.
# -monitor prints solve progress to stdout (the log). AEDT starts its remote engines itself (Intel MPI/ssh),
# which pass the environment on; the run tag is exported for Open MPI-based engines too.
export OMPI_MCA_mca_base_env_list="E2E_RUN_TAG${OMPI_MCA_mca_base_env_list:+;$OMPI_MCA_mca_base_env_list}"
ansysedt -ng -monitor -distributed -machinelist list=localhost:1:4:90% -batchoptions 'HFSS/HPCLicenseType=pool HFSS/MPIVendor=Intel HFSS/NumCoresPerDistributedTask=4 TempDirectory=./aedt-tmp' -batchsolve patch.aedt > ansysedt-1.log 2>&1
