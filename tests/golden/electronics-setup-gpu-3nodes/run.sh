#!/bin/bash
# Ansys Electronics Desktop batch solve, rendered by the engine; every value is shell-quoted.
# -monitor prints solve progress to stdout (the log). AEDT starts its remote engines itself (Intel MPI/ssh),
# which pass the environment on; the run tag is exported for Open MPI-based engines too.
export OMPI_MCA_mca_base_env_list="E2E_RUN_TAG${OMPI_MCA_mca_base_env_list:+;$OMPI_MCA_mca_base_env_list}"
/opt/AnsysEM/v241/Linux64/ansysedt -ng -monitor -distributed -machinelist list=node1.cluster:2:4:90%:1,node2.cluster:2:4:90%:1,node3.cluster:2:4:90%:1 -batchoptions 'HFSS/HPCLicenseType=pack HFSS/MPIVendor=Intel HFSS/NumCoresPerDistributedTask=2 TempDirectory=./aedt-tmp' -batchsolve HFSSDesign1:Nominal:Setup1 patch.aedt > ansysedt-1.log 2>&1
