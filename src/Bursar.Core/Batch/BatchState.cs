namespace Bursar.Core.Batch;

/// <summary>
/// A provider batch submitted through Bursar: which deployment holds it under which upstream id, who submitted it (the
/// attribution every line's ledger row carries), and how far Bursar got. <see cref="Id"/> is Bursar's id, the one the
/// caller sees; <see cref="Manifest"/> is the spooled list of its lines (<c>custom_id</c>, model, worst case).
/// </summary>
public sealed record BatchState
{
    public required string Id { get; init; }
    /// <summary><c>openai</c> or <c>anthropic</c>: the dialect of the caller and of the deployment.</summary>
    public required string Dialect { get; init; }
    public required string Deployment { get; init; }
    /// <summary>The provider's id; null while the submit is in flight (a crash then is reconciled by listing the provider's batches).</summary>
    public string? UpstreamId { get; init; }
    public required BatchPhase Phase { get; init; }
    public required string KeyId { get; init; }
    public string? Team { get; init; }
    public string? Customer { get; init; }
    public string? Feature { get; init; }
    public string? Task { get; init; }
    public string? Template { get; init; }
    public string? Route { get; init; }
    /// <summary>The model of an OpenAI batch (one per file); null for an Anthropic batch (per line).</summary>
    public string? Model { get; init; }
    public required int Lines { get; init; }
    /// <summary>The whole batch's worst case at the batch rate, reserved at submit.</summary>
    public required decimal WorstUsd { get; init; }
    public required string Manifest { get; init; }
    /// <summary>Bursar's id of the OpenAI input file.</summary>
    public string? InputFileId { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset UpdatedAt { get; init; }
    /// <summary>Every line has its ledger row.</summary>
    public bool Collected { get; init; }
    /// <summary>The provider's last answer for this batch, ids rewritten to Bursar's (what the list endpoints return).</summary>
    public string? Object { get; init; }
    public string? Error { get; init; }
    /// <summary>A batch Bursar made of deferred jobs (<see cref="DeferredJob"/>): each line's <c>custom_id</c> is a job id, and each line's row carries its job's attribution.</summary>
    public bool Jobs { get; init; }
}

/// <summary>Where a batch is in its life as Bursar sees it.</summary>
public enum BatchPhase
{
    /// <summary>Recorded before the provider is asked: a crash here leaves a batch the provider may or may not hold.</summary>
    Submitting,
    /// <summary>The provider holds it and is working on it.</summary>
    Running,
    /// <summary>The provider says it ended; its lines are being (or have been) written to the ledger.</summary>
    Ended,
    /// <summary>The provider never accepted it (or it was never found after a crash): no line ran.</summary>
    Abandoned,
}

/// <summary>A file uploaded through Bursar (or a result file of a batch), mapped to the deployment holding it.</summary>
public sealed record BatchFileState
{
    public required string Id { get; init; }
    public required string Deployment { get; init; }
    public required string UpstreamId { get; init; }
    public required string KeyId { get; init; }
    public required string Purpose { get; init; }
    public string? Filename { get; init; }
    public long Bytes { get; init; }
    public int Lines { get; init; }
    public string? Model { get; init; }
    public decimal WorstUsd { get; init; }
    /// <summary>Bursar's copy of an uploaded input file (the lines' manifest is read from it at submit).</summary>
    public string? Spool { get; init; }
    public required DateTimeOffset CreatedAt { get; init; }
    public bool Deleted { get; init; }
}

/// <summary>The durable state of batches and their files (SQLite by default, in the same file as the ledger).</summary>
public interface IBatchStore
{
    Task SaveBatchAsync(BatchState batch, CancellationToken cancellationToken);

    Task<BatchState?> FindBatchAsync(string id, CancellationToken cancellationToken);

    /// <summary>Batches of a key, newest first (<paramref name="keyId"/> null: every key).</summary>
    Task<IReadOnlyList<BatchState>> ListBatchesAsync(string? keyId, string? dialect, int limit, CancellationToken cancellationToken);

    /// <summary>Batches whose lines are not all on the ledger yet: what the poller works through, after a restart too.</summary>
    Task<IReadOnlyList<BatchState>> ListOpenBatchesAsync(CancellationToken cancellationToken);

    Task SaveFileAsync(BatchFileState file, CancellationToken cancellationToken);

    Task<BatchFileState?> FindFileAsync(string id, CancellationToken cancellationToken);

    Task<BatchFileState?> FindFileByUpstreamAsync(string deployment, string upstreamId, CancellationToken cancellationToken);
}
