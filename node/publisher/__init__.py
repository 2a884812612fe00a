"""Publishers: where an execution's results directory goes once the container has run.

``local`` keeps it on the compute node (peers fetch it over ``/bacnode/results/1``),
``noop`` publishes nothing, ``s3`` uploads it (one ``.tar.gz`` or file by file).
Each returns the ``published`` location that goes into the signed result record.
"""
