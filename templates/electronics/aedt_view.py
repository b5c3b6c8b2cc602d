# AEDT script of the job's desktop (ansysedt -RunScript ...; RUN_COPY, PROJECT and SNAPSHOT_DIR are prepended by
# the plugin): opens a copy of the run's project, never the project itself, which the batch solve holds locked.
# The copy (the .aedt and its .aedtresults, solved passes included) goes into SNAPSHOT_DIR, outside the synced
# work folder, so nothing this AEDT saves or locks can reach the run. Running the script again (Tools > Run
# Script) takes a fresh copy and reopens it. IronPython 2.7 (AEDT's) and CPython 3 alike.
import os
import shutil

import ScriptEnv

ScriptEnv.Initialize("Ansoft.ElectronicsDesktop")
desktop = oDesktop  # noqa: F821 - set by ScriptEnv.Initialize, as in every script AEDT records

name = PROJECT[:-len(".aedt")]  # noqa: F821
source = os.path.join(RUN_COPY, PROJECT)  # noqa: F821
source_results = os.path.join(RUN_COPY, name + ".aedtresults")  # noqa: F821
copy = os.path.join(SNAPSHOT_DIR, PROJECT)  # noqa: F821
copy_results = os.path.join(SNAPSHOT_DIR, name + ".aedtresults")  # noqa: F821

if name in list(desktop.GetProjectList()):  # the previous copy: closed before it is replaced
    desktop.CloseProject(name)
if not os.path.isdir(SNAPSHOT_DIR):  # noqa: F821
    os.makedirs(SNAPSHOT_DIR)  # noqa: F821
if os.path.isdir(copy_results):
    shutil.rmtree(copy_results)
shutil.copyfile(source, copy)  # reads the run's project; copyfile, not copy2: the copy gets its own times
if os.path.isdir(source_results):
    shutil.copytree(source_results, copy_results)
desktop.OpenProject(copy)
