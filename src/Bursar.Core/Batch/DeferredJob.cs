using Bursar.Core.Pipeline;

namespace Bursar.Core.Batch;

/// <summary>
/// A call the caller let wait (<c>x-bursar-defer</c>, a route's <c>Defer</c>): answered at once with 202 and this job's
/// id, queued durably, sent in a provider batch with others for the same deployment and model, and finished with exactly
/// the body (and status) the synchronous call would have returned.
/// </summary>
public sealed record DeferredJob
{
    public required string Id { get; init; }
    public required string KeyId { get; init; }
    public string? Team { get; init; }
    public string? Customer { get; init; }
    public string? Feature { get; init; }
    public string? Task { get; init; }
    public string? Template { get; init; }
    public string? Route { get; init; }
    /// <summary>The caller's dialect, which is the deployment's (a deferred call is never translated).</summary>
    public required string Dialect { get; init; }
    public required string Deployment { get; init; }
    public required string Model { get; init; }
    public string? RequestedModel { get; init; }
    /// <summary>The request body as it goes upstream (the stages' edits applied).</summary>
    public required byte[] Body { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    /// <summary>When the caller's delay runs out: a batch that has not answered by then falls back to a synchronous call while it can.</summary>
    public required DateTimeOffset Deadline { get; init; }
    public decimal WorstUsd { get; init; }
    public JobState State { get; init; } = JobState.Queued;
    /// <summary>The Bursar batch that carries it, once flushed.</summary>
    public string? BatchId { get; init; }
    /// <summary>The answer's HTTP status and body, once done (or the error the caller gets, once failed).</summary>
    public int StatusCode { get; init; }
    public byte[]? Result { get; init; }
    public string? Error { get; init; }
    public DateTimeOffset UpdatedAt { get; init; }

    /// <summary>The job's one ledger row, whichever way it ends (its batch's line, a synchronous fallback, a failure).</summary>
    public string RecordId => BatchLedger.RecordId("job", Id);
}

public enum JobState { Queued, Submitted, Done, Failed, Canceled }

/// <summary>A queue of deferred jobs (SQLite by default, in the same file as the ledger).</summary>
public interface IJobStore
{
    Task EnqueueAsync(DeferredJob job, CancellationToken cancellationToken);

    Task<DeferredJob?> FindJobAsync(string id, CancellationToken cancellationToken);

    /// <summary>Queued jobs per deployment and model: how many, and when the oldest was queued.</summary>
    Task<IReadOnlyList<(string Deployment, string Model, int Count, DateTimeOffset Oldest, DateTimeOffset NearestDeadline)>> QueuedGroupsAsync(CancellationToken cancellationToken);

    /// <summary>The oldest queued jobs of one deployment and model, at most <paramref name="limit"/>.</summary>
    Task<IReadOnlyList<DeferredJob>> QueuedAsync(string deployment, string model, int limit, CancellationToken cancellationToken);

    /// <summary>Marks the jobs as carried by <paramref name="batchId"/> (state Submitted), in one transaction.</summary>
    Task AssignAsync(IReadOnlyList<string> jobIds, string batchId, DateTimeOffset when, CancellationToken cancellationToken);

    Task<IReadOnlyList<DeferredJob>> JobsOfBatchAsync(string batchId, CancellationToken cancellationToken);

    /// <summary>Puts the jobs of a batch the provider never took back in the queue.</summary>
    Task<int> RequeueAsync(string batchId, DateTimeOffset when, CancellationToken cancellationToken);

    /// <summary>Ends a job (Done, Failed or Canceled) unless it has ended already (a job already sent in a batch cannot be canceled); false when it could not.</summary>
    Task<bool> FinishAsync(string id, JobState state, int statusCode, byte[]? result, string? error, DateTimeOffset when, CancellationToken cancellationToken);

    Task<IReadOnlyList<DeferredJob>> ListJobsAsync(JobState? state, int limit, CancellationToken cancellationToken);
}

/// <summary>The face's side of deferral: turns a call into a queued job (the gateway has the bytes that go upstream).</summary>
public interface IJobQueue
{
    /// <summary>Queues the call; null when this call cannot wait in a batch (another dialect's deployment), so it runs now.</summary>
    ValueTask<string?> EnqueueAsync(LeverCall call, TimeSpan delay, CancellationToken cancellationToken);
}
