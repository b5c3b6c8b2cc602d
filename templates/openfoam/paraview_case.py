# ParaView state of the job's desktop (paraview --script=...; FOAM_FILE is prepended by the plugin): the live
# OpenFOAM case in the current folder (the run's copy in the work folder) at its latest time, refreshed while
# the solver writes new time directories.
import glob
import os
import sys
import traceback

from paraview import simple

REFRESH_MS = 3000  # how often new time directories are looked for


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


open(FOAM_FILE, "a").close()  # noqa: F821 - the empty file the built-in OpenFOAM reader opens
reader = simple.OpenFOAMReader(registrationName=FOAM_FILE, FileName=os.path.abspath(FOAM_FILE))  # noqa: F821
reader.CaseType = case_type()
reader.UpdatePipelineInformation()
view = simple.GetActiveViewOrCreate("RenderView")
display = simple.Show(reader, view)
scene = simple.GetAnimationScene()
scene.UpdateAnimationUsingDataTimeSteps()
scene.GoToLast()
coloured = False


def colour():
    """Colour by pressure (or velocity) once the reader offers it: a case opened before its first fields
    were written shows a solid colour until then."""
    global coloured
    for field in ("p", "U"):
        if field in reader.PointData.keys():
            simple.ColorBy(display, ("POINTS", field))
            display.RescaleTransferFunctionToDataRange(True, False)
            display.SetScalarBarVisibility(view, True)
            coloured = True
            return


colour()


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


framed = False  # a case opened before its mesh is complete is framed once it is
frame()
shown = list(reader.TimestepValues or [])


def refresh(*_):
    try:
        update()
    except Exception:  # a half-synced time directory: the next tick tries again; the session log says why
        traceback.print_exc(file=sys.__stderr__)


def update():
    """New time directories: re-read the case's times (ReloadFiles), switch the case type when a
    reconstruct happened, and go to the newest time."""
    global shown
    wanted = case_type()
    if reader.CaseType != wanted:
        reader.CaseType = wanted
    simple.ReloadFiles(reader)
    reader.UpdatePipelineInformation()
    times = list(reader.TimestepValues or [])
    if times == shown and framed and coloured:
        return
    scene.UpdateAnimationUsingDataTimeSteps()
    scene.GoToLast()
    reader.UpdatePipeline(times[-1] if times else 0.0)
    if not coloured:
        colour()
    if coloured:
        display.RescaleTransferFunctionToDataRange(False, True)
    if framed:
        simple.Render(view)
    else:
        frame()
    shown = times  # only once all went through: a failed tick is tried again


# The GUI's render window interactor is Qt's (QVTKInteractor): its repeating timer is a QTimer on the GUI
# thread, so the refresh runs between user events, never beside them.
interactor = view.GetInteractor()
if interactor is not None:
    interactor.AddObserver("TimerEvent", refresh)
    interactor.CreateRepeatingTimer(REFRESH_MS)
