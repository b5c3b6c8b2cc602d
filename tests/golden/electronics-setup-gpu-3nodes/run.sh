#!/bin/bash
# Ansys Electronics Desktop batch solve, rendered by the engine; every value is shell-quoted.
# -monitor prints solve progress to stdout (the log). AEDT starts its remote engines itself (Intel MPI/ssh),
# which pass the environment on; the run tag is exported for Open MPI-based engines too.
export OMPI_MCA_mca_base_env_list="E2E_RUN_TAG${OMPI_MCA_mca_base_env_list:+;$OMPI_MCA_mca_base_env_list}"
rm -f e2e-stop  # a stop left from an earlier attempt would end this one at once
/opt/AnsysEM/v241/Linux64/ansysedt -ng -monitor -distributed -machinelist list=node1.cluster:2:4:90%:1,node2.cluster:2:4:90%:1,node3.cluster:2:4:90%:1 -batchoptions 'HFSS/HPCLicenseType=pack HFSS/MPIVendor=Intel HFSS/NumCoresPerDistributedTask=2 TempDirectory=./aedt-tmp' -batchsolve HFSSDesign1:Nominal:Setup1 patch.aedt > ansysedt-1.log 2>&1 &
solver=$!
# a stop signal for the run goes to the solver; this script stays to report its exit code
trap 'kill -TERM "$solver" 2>/dev/null' TERM INT
# Batch mode reads no stop file, so a graceful stop is done here: once the stop file appears, let the
# current adaptive pass or frequency point finish (solved data stays in the .aedtresults folder, which the
# next -batchsolve continues from), then end the solve.
done_at_stop=""
while kill -0 "$solver" 2>/dev/null; do
  if [ -e e2e-stop ]; then
    done_now=$(grep -cE "Adaptive Pass [0-9]+|Frequency point [0-9]+" ansysedt-1.log)
    if [ -z "$done_at_stop" ]; then
      done_at_stop=$done_now
    elif [ "$done_now" -gt "$done_at_stop" ]; then
      kill -TERM "$solver"
      # the launching service may have left SIGTERM ignored (inherited through exec): KILL if it stays
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$solver" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$solver" 2>/dev/null
      wait "$solver"
      echo "[info] e2e: stopped on request after a completed solve step (solved data kept)" >> ansysedt-1.log
      exit 0
    fi
  fi
  sleep 0.2
done
wait "$solver"
rc=$?
while kill -0 "$solver" 2>/dev/null; do wait "$solver"; rc=$?; done  # a trapped signal cuts `wait` short
# The queue marker is AEDT's own word that the batch job ended (PyAEDT waits for it too).
if [ -e patch.aedt.q.completed ]; then
  echo "[info] e2e: completion marker patch.aedt.q.completed present" >> ansysedt-1.log
fi
exit "$rc"
