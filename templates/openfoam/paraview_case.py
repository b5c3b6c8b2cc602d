# ParaView state of the job's desktop (paraview --script=...; FOAM_FILE and RUN_FOLDER are prepended by the
# plugin): the live OpenFOAM case in the run's copy (RUN_FOLDER of the work folder, where ParaView starts) at its
# latest time, refreshed while the solver writes new time directories.
import glob
import os
import sys
import traceback

from paraview import simple

REFRESH_MS = 1000  # how often the case's folders are looked at (a listing; the reader re-reads only on a change)


def _is_time(name):
    try:
        float(name)
        return True
    except ValueError:
        return False


def case_type():
    """Decomposed while only processor*/ hold the results (a parallel run not yet reconstructed)."""
    written = [d for d in os.listdir(".") if os.path.isdir(d) and _is_time(d) and float(d) > 0]
    return "Decomposed Case" if glob.glob("processor[0-9]*") and not written else "Reconstructed Case"


def _listing(folder):
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def layout():
    """What the reader follows: the time folders of the case and of its first processor, and the mesh's files
    (a listing costs microseconds; the reader's ReloadFiles costs a read of the case)."""
    folders = [d for d in os.listdir(".") if os.path.isdir(d)]
    processors = sorted(d for d in folders if d.startswith("processor") and d[len("processor"):].isdigit())
    first = processors[0] if processors else "."
    mesh = _listing("constant/polyMesh") or _listing(os.path.join(first, "constant", "polyMesh"))
    times = time_folders(first)
    newest = _listing(os.path.join(first, times[-1])) if times else []  # complete once the sync copied it all
    return sorted(d for d in folders if _is_time(d)), processors, _listing(first) if processors else [], mesh, \
        newest


MESH_FILES = {"points", "faces", "owner", "neighbour", "boundary"}


def time_folders(folder):
    return sorted((d for d in _listing(folder) if _is_time(d) and os.path.isdir(os.path.join(folder, d))), key=float)


def newest_complete():
    """The newest time whose folder holds every file the one before it holds: the solver writes a time folder
    file by file and the sync copies it file by file, so the newest one may still lack a field (shown, it
    would paint the case one flat colour and make ParaView warn)."""
    folders = [d for d in os.listdir(".") if d.startswith("processor") and d[len("processor"):].isdigit()]
    base = sorted(folders)[0] if reader.CaseType == "Decomposed Case" and folders else "."
    names = time_folders(base)
    for older, newer in zip(reversed(names[:-1]), reversed(names[1:]), strict=True):
        if set(_listing(os.path.join(base, older))) <= set(_listing(os.path.join(base, newer))):
            return float(newer)
    return float(names[0]) if names else None


# ParaView starts in the work folder, which exists with the session: the run's copy appears with the sync's first
# pass, seconds later, and ParaView's own start-up takes seconds too, so it is not made to wait for it.
CASE_DIR = os.path.abspath(RUN_FOLDER)  # noqa: F821


def in_case():
    """Whether the current folder is the run's copy (moved into once it exists)."""
    if os.getcwd() != CASE_DIR and os.path.isdir(CASE_DIR):
        os.chdir(CASE_DIR)
    return os.getcwd() == CASE_DIR


view = simple.GetActiveViewOrCreate("RenderView")
reader = display = scene = None
coloured = framed = False  # a case opened before its mesh or fields are complete is framed and coloured later
colour_field = None
seen = None


def open_case():
    """The reader on the case, once its mesh is there: ParaView starts with the session (it takes seconds to start;
    the mesh may still be being made), and a reader opened on no mesh only shows errors."""
    global reader, display, scene
    open(FOAM_FILE, "a").close()  # noqa: F821 - the empty file the built-in OpenFOAM reader opens
    opened = simple.OpenFOAMReader(registrationName=FOAM_FILE, FileName=os.path.abspath(FOAM_FILE))  # noqa: F821
    try:
        opened.CaseType = case_type()
        opened.UpdatePipelineInformation()
        shown = simple.Show(opened, view)
    except Exception:
        simple.Delete(opened)  # a mesh still being copied: the next change of the folders tries again
        raise
    reader, display = opened, shown
    scene = simple.GetAnimationScene()
    scene.UpdateAnimationUsingDataTimeSteps()
    scene.GoToLast()
    colour()
    frame()


def colour():
    """Colour by pressure (or velocity) once the reader offers it: a case opened before its first fields
    were written shows a solid colour until then."""
    global coloured, colour_field
    for field in ("p", "U"):
        if field in reader.PointData.keys():
            colour_field = field
            simple.ColorBy(display, ("POINTS", field))
            display.RescaleTransferFunctionToDataRange(True, False)
            simple.HideUnusedScalarBars(view)  # a bar left from another field would stay beside this one
            display.SetScalarBarVisibility(view, True)
            coloured = True
            return


def has_cells():
    info = reader.GetDataInformation()
    return bool(info and info.GetNumberOfCells())


def frame():
    """Fit the camera to the case, once it has cells (drawn first: the camera fits what was drawn)."""
    global framed
    simple.Render(view)
    if has_cells():
        simple.ResetCamera(view)
        framed = True
    simple.Render(view)


def refresh(*_):
    try:
        update()
    except Exception:  # a half-synced time directory: the next tick tries again; the session log says why
        traceback.print_exc(file=sys.__stderr__)


def update():
    """The case's folders changed (a new time, a reconstruct, the mesh): open the case if not yet, re-read its
    times (ReloadFiles), switch the case type when a reconstruct happened, and go to the newest time."""
    global seen, coloured
    if not in_case():
        return
    now = layout()
    if now == seen and (reader is None or (framed and coloured)):
        return
    if reader is None:
        if MESH_FILES <= {name.removesuffix(".gz") for name in now[3]}:  # the mesh, whole
            open_case()
            seen = now
        return
    wanted = case_type()
    if reader.CaseType != wanted:
        reader.CaseType = wanted
    simple.ReloadFiles(reader)
    reader.UpdatePipelineInformation()
    times = list(reader.TimestepValues or [])
    scene.UpdateAnimationUsingDataTimeSteps()
    target = newest_complete()
    shown = min(times, key=lambda t: abs(t - target)) if times and target is not None else None
    if shown is None:
        scene.GoToLast()
    else:
        scene.AnimationTime = shown
    reader.UpdatePipeline(shown if shown is not None else (times[-1] if times else 0.0))
    if coloured and colour_field not in reader.PointData.keys():
        coloured = False  # not in this time's data: colour again once it is
    if not coloured:
        colour()
    if coloured:
        display.RescaleTransferFunctionToDataRange(False, True)
    if framed:
        simple.Render(view)
    else:
        frame()
    seen = now  # only once all went through: a failed tick is tried again


update()
# The GUI's render window interactor is Qt's (QVTKInteractor): its repeating timer is a QTimer on the GUI
# thread, so the refresh runs between user events, never beside them.
interactor = view.GetInteractor()
if interactor is not None:
    interactor.AddObserver("TimerEvent", refresh)
    interactor.CreateRepeatingTimer(REFRESH_MS)
