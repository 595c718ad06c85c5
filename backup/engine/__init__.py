"""The backup engine: objects of backup, runs that copy content-addressed blobs and write manifests, verification and
restore. Views, tasks and the `backup` command call the functions of `backup.engine.runs`; nothing here renders HTTP.
"""
