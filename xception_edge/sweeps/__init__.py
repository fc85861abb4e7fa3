"""`xception-edge sweep`: calibration diagnostics. One target converted over a grid of calibration
size x seed x method x transforms (``grid.py``), each cell a conversion and an evaluation on the
validation images against the Keras model computed once (``cell.py``), here or as Ray tasks
(``scale.executor.map_tasks``); the spread over seeds judged against the paired-bootstrap noise
of those images and a recommended size (``noise.py``); sweep.json/md/html (``report.py``);
finished cells kept for ``--resume`` (``store.py``). Nothing here imports a framework at import
time."""
