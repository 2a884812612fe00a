"""The local API's responses as pydantic models, in the shapes of Bacalhau v1.9's ``apimodels``.

Routes name these as their ``response_model``: ``/api/v1/openapi.json`` describes each answer
with them, and under the tests (``BACNODE_API_CHECK_RESPONSES``) every answer is checked to be
exactly what its model would send (``node/api_routing.py``). Only those two load this module,
and pydantic with it. Field names are Bacalhau's JSON keys. Fields Bacalhau's models lack are
bacnode's own, each said so.
"""


from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    # Bacalhau's keys are Go field names (GOOS, NodeID...), not Python style.
    model_config = ConfigDict(populate_by_name=True)


class ApiError(_Model):
    """Every error: Bacalhau's ``APIError``, which its CLI prints as ``Error: <Message>``."""

    Status: int
    Message: str
    Code: str
    Component: str
    RequestID: str


class AliveResponse(_Model):
    Status: str


class ReadyResponse(_Model):
    Ready: bool
    Checks: dict[str, str] = Field(
        description="each check (store, mesh, docker) and its state: ok, or why not")


class BuildVersionInfoModel(_Model):
    Major: str = ""
    Minor: str = ""
    GitVersion: str
    GitCommit: str = ""
    BuildDate: str | None = None
    GOOS: str = ""
    GOARCH: str = ""
    Protocol: str | None = Field(None, description="bacnode's own: its wire protocol")
    Python: str | None = Field(None, description="bacnode's own: the Python it runs on")
    Libp2p: str | None = Field(None, description="bacnode's own: the py-libp2p version")


class ResourcesModel(_Model):
    CPU: float = Field(0, description="cores")
    Memory: int = Field(0, description="bytes")
    Disk: int = Field(0, description="bytes")
    GPU: int = 0


class ComputeNodeInfoModel(_Model):
    ExecutionEngines: list[str]
    StorageSources: list[str]
    Publishers: list[str]
    MaxCapacity: ResourcesModel
    QueueCapacity: ResourcesModel
    AvailableCapacity: ResourcesModel
    MaxJobRequirements: ResourcesModel
    RunningExecutions: int
    EnqueuedExecutions: int
    UnavailableEngines: dict[str, str] = Field(
        default_factory=dict, description="bacnode's own: installed engines that cannot run "
        "anything now (dockerd went away, say), and why; the node does not bid for them")


class NodeInfoModel(_Model):
    NodeID: str
    NodeType: str = Field(description="Compute (runs jobs) or Requester")
    Labels: dict[str, str]
    SupportedProtocols: list[str]
    BacalhauVersion: BuildVersionInfoModel
    ComputeNodeInfo: ComputeNodeInfoModel | None = None
    Addresses: list[str] = Field(description="bacnode's own: libp2p multiaddrs")
    Roles: list[str] = Field(description="bacnode's own: requester and/or compute")


class ConnectionStateModel(_Model):
    Status: str
    LastHeartbeat: str | None = None
    ConnectedSince: str | None = None
    DisconnectedSince: str | None = None
    Transport: str | None = Field(None, description="bacnode's own: how this node reaches it "
                                  "now, direct or relayed (a circuit relay); none for itself "
                                  "or a node it has no connection to")


class NodeStateModel(_Model):
    Info: NodeInfoModel
    Membership: str
    Connection: str
    ConnectionState: ConnectionStateModel
    FirstSeen: str | None = Field(None, description="bacnode's own: first heard of")
    LastSeen: str | None = Field(None, description="bacnode's own: last heard of")
    Reputation: dict[str, int] | None = Field(
        None, description="bacnode's own: this daemon's record of the node as a requester "
                          "(Agreements, Disagreements, Withheld, Failures, Timeouts, Score)")


class ListNodesResponse(_Model):
    Nodes: list[NodeStateModel]
    nodes: list[NodeStateModel] = Field(description="the same list, as bacalhau-apiclient reads it")
    NextToken: str


class GetNodeResponse(_Model):
    Node: NodeStateModel
    node: NodeStateModel = Field(description="the same node, as bacalhau-apiclient reads it")


class AgentConfigResponse(_Model):
    config: dict[str, Any]


class AuthMethod(_Model):
    type: str
    params: dict[str, Any]


class ListAuthMethodsResponse(_Model):
    Methods: dict[str, AuthMethod]
    NextToken: str


class AuthenticationModel(_Model):
    success: bool
    token: str


class AuthnResponse(_Model):
    Authentication: AuthenticationModel


class SpecConfig(_Model):
    Type: str
    Params: dict[str, Any] = {}


class VerificationGroupModel(_Model):
    Digest: str = Field(description="SHA-256 of the result (protocol.verification)")
    Executions: list[str]


class VerificationModel(_Model):
    State: str = Field(description="Pending, Verified or NoConsensus")
    Confidence: int = Field(description="how many executions must agree")
    Accepted: str = Field("", description="the digest the verdict accepted, if any")
    Groups: list[VerificationGroupModel] = []


class JobStateModel(_Model):
    StateType: str = Field(description="Pending, Queued, Running, Completed, Failed, Stopped")
    Message: str = ""
    #: Only for a job run with Verification (bacnode's; Bacalhau's clients ignore it).
    Verification: VerificationModel | None = None


class JobModel(_Model):
    # The spec itself is protocol.jobspec.Job.to_dict(): validated there, kept as it is here.
    model_config = ConfigDict(extra="allow")

    ID: str
    Name: str
    Namespace: str
    Type: str
    Priority: int
    Count: int
    Meta: dict[str, str]
    Labels: dict[str, str]
    Constraints: list[dict[str, Any]]
    Tasks: list[dict[str, Any]]
    State: JobStateModel
    Version: int
    Revision: int
    CreateTime: int = Field(description="Unix nanoseconds")
    ModifyTime: int = Field(description="Unix nanoseconds")
    Requester: str = Field(description="bacnode's own: the node that accepted the job")


class ExecutionStateValue(_Model):
    StateType: int = Field(description="Bacalhau's ExecutionStateType (Running 6, Completed 9…) "
                                       "or ExecutionDesiredStateType (Running 1, Stopped 2)")
    Message: str = ""


class RunOutputModel(_Model):
    Stdout: str
    StdoutTruncated: bool
    stderr: str = Field(description="lower-case, as Bacalhau's")
    StderrTruncated: bool
    ExitCode: int
    ErrorMsg: str


class Execution(_Model):
    ID: str
    Namespace: str
    JobID: str
    JobVersion: int
    NodeID: str
    ComputeState: ExecutionStateValue
    DesiredState: ExecutionStateValue
    PublishedResult: SpecConfig | None
    RunOutput: RunOutputModel | None
    Revision: int
    CreateTime: int
    ModifyTime: int


class EventModel(_Model):
    Message: str
    Topic: str
    Timestamp: str | None
    Details: dict[str, str]


class JobHistory(_Model):
    SeqNum: int
    Type: str = Field(description="JobLevel or ExecutionLevel")
    JobID: str
    JobVersion: int
    ExecutionID: str | None = None
    Time: str | None = Field(description="RFC 3339")
    Event: EventModel
    JobState: dict[str, str] | None = Field(None, description="Previous and New job state")
    ExecutionState: dict[str, int] | None = Field(
        None, description="Previous and New execution state, as Bacalhau's integers")


class ListJobsResponse(_Model):
    Items: list[JobModel]
    NextToken: str


class ListJobExecutionsResponse(_Model):
    Items: list[Execution]
    NextToken: str


class ListJobHistoryResponse(_Model):
    Items: list[JobHistory]
    NextToken: str = Field(description="non-empty until the job has ended and every event "
                                       "was sent")


class GetJobResponse(_Model):
    Job: JobModel
    History: ListJobHistoryResponse | None = None
    Executions: ListJobExecutionsResponse | None = None


class PublishedResultItem(SpecConfig):
    """One execution's results, as Bacalhau's downloaders take them (urlDownload,
    s3PreSigned, ipfs), with bacnode's signed record."""

    ExecutionID: str
    NodeID: str
    ExitCode: int
    SignedRecord: str = Field(description="base64 of the compute node's signed result record")


class ListJobResultsResponse(_Model):
    Items: list[PublishedResultItem]
    NextToken: str


class PutJobResponse(_Model):
    JobID: str
    EvaluationID: str
    Warnings: list[str]


class StopJobResponse(PutJobResponse):
    pass


class ExecutionLogs(_Model):
    ExecutionID: str
    NodeID: str
    State: str
    Stdout: str
    Stderr: str


class JobLogsResponse(_Model):
    """bacnode's JSON logs (Bacalhau's CLI takes the same path as a WebSocket)."""

    Items: list[ExecutionLogs]
    JobState: str
