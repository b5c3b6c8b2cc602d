# Minimal RunFunctions for the tests' direct runs of a tutorial's Allrun (Debian ships none): the functions the
# engine's Allrun grammar understands, with OpenFOAM's semantics (log.<app>[.<suffix>], stop on a failed step).
getApplication() { sed -ne 's/^ *application\s*\([a-zA-Z]*\)\s*;.*$/\1/p' system/controlDict; }
_run() {
    parallel=$1; shift; suffix=""
    while [ "$#" -gt 0 ]; do
        case "$1" in -s) suffix=".$2"; shift 2;; -o|-overwrite) shift;; *) break;; esac
    done
    app=$1; shift; log="log.${app##*/}$suffix"
    if [ -f "$log" ]; then echo "$app already run: remove $log" >&2; return 1; fi
    if [ "$parallel" = 1 ]; then
        mpirun --allow-run-as-root -np "$(sed -ne 's/^numberOfSubdomains\s*\([0-9]*\).*/\1/p' system/decomposeParDict)" "$app" -parallel "$@" > "$log" 2>&1
    else
        "$app" "$@" > "$log" 2>&1
    fi
}
runApplication() { _run 0 "$@"; }
runParallel() { _run 1 "$@"; }
restore0Dir() { if [ -d 0.orig ]; then rm -rf 0; cp -r 0.orig 0; else echo "No 0.orig/ to restore..."; fi; }
