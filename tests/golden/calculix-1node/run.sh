#!/bin/bash
# CalculiX run, rendered by the engine; every value is shell-quoted. Shared memory: one node, OpenMP threads.
export OMP_NUM_THREADS=4
rm -f e2e-stop  # a stop left from an earlier attempt would end this one at its first step
ccx -i job > ccx-1.log 2>&1 &
ccx_pid=$!
# a stop signal for the run goes to the solver; this script stays to report its exit code
trap 'kill -TERM "$ccx_pid" 2>/dev/null' TERM INT
# ccx reads no control file, so a graceful stop is done here: once the stop file appears, let the current
# step end (its restart record is then written to the .rout) and stop ccx as the next step begins.
stop_step=""
while kill -0 "$ccx_pid" 2>/dev/null; do
  if [ -e e2e-stop ]; then
    step=$(awk 'NR > 2 && NF == 7 { s = $1 } END { print s + 0 }' job.sta 2>/dev/null)
    if [ -z "$stop_step" ]; then
      stop_step=$(( ${step:-0} > 1 ? ${step:-0} : 1 ))
    elif [ "${step:-0}" -gt "$stop_step" ]; then
      kill -TERM "$ccx_pid"
      # the launching service may have left SIGTERM ignored (inherited through exec): KILL if it stays
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$ccx_pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$ccx_pid" 2>/dev/null
      wait "$ccx_pid"
      echo " stopped on request after step $stop_step (restart record written)" >> ccx-1.log
      exit 0
    fi
  fi
  sleep 0.2
done
wait "$ccx_pid"
rc=$?
while kill -0 "$ccx_pid" 2>/dev/null; do wait "$ccx_pid"; rc=$?; done  # a trapped signal cuts `wait` short
exit "$rc"
