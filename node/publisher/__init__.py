"""Publishers: where an execution's results directory goes once the task has run.

One interface (``Publisher``), one module per backend: ``local`` keeps results on
the compute node (peers fetch them over ``/bacnode/results/1``), ``noop`` publishes
nothing, ``ipfs`` adds them to the node's blockstore, ``s3`` uploads them (one
``.tar.gz`` or file by file; boto3 is imported only when it does). Each returns
the ``published`` location and the manifest that go into the signed result record.
"""

from .base import Publisher, PublishError, PublishRequest, manifest_of
from .ipfs import IpfsPublisher
from .local import LocalPublisher
from .noop import NoopPublisher
from .registry import PublisherRegistry
from .s3 import S3Publisher

__all__ = ["IpfsPublisher", "LocalPublisher", "NoopPublisher", "PublishError", "PublishRequest",
           "Publisher", "PublisherRegistry", "S3Publisher", "manifest_of"]
