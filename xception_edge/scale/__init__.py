"""Scale-out on Ray: ``executor.map_tasks`` (one call per item, here or as Ray tasks) and the
sharded, resumable ``evaluate --executor ray``. Nothing here imports Ray at module level: Ray is
imported only when the user asks for it (``--executor ray``)."""
