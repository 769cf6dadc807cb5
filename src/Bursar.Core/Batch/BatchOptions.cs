namespace Bursar.Core.Batch;

/// <summary>The <c>Bursar:Batch</c> section: provider batches passed through the gateway. Validated once at start.</summary>
public sealed class BatchOptions
{
    public const string Section = "Bursar:Batch";

    /// <summary>How often the poller asks the providers about batches that have not ended. Default 1 minute (batches take minutes to hours).</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// How long a submit may stay unconfirmed (Bursar crashed between asking the provider and recording its answer) before the
    /// poller looks for it in the provider's batch list by the metadata Bursar attached. Default 30 seconds.
    /// </summary>
    public TimeSpan ReconcileAfter { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Largest batch input file accepted, in bytes. Default 200 MB (OpenAI's limit; Anthropic's is 256 MB per batch).</summary>
    public long MaxFileBytes { get; set; } = 200L * 1024 * 1024;

    /// <summary>Largest single line of an input file, in bytes. Default 8 MB.</summary>
    public int MaxLineBytes { get; set; } = 8 * 1024 * 1024;

    /// <summary>Lines per OpenAI input file. Default 50,000 (OpenAI's limit).</summary>
    public int MaxOpenAILines { get; set; } = 50_000;

    /// <summary>Requests per Anthropic message batch. Default 100,000 (Anthropic's limit).</summary>
    public int MaxAnthropicRequests { get; set; } = 100_000;

    public void Validate()
    {
        if (PollInterval < TimeSpan.FromMilliseconds(10) || PollInterval > TimeSpan.FromHours(1))
            throw new InvalidOperationException($"{Section}:PollInterval must be from 10 ms to 1 hour, not {PollInterval}.");
        if (ReconcileAfter < TimeSpan.Zero || ReconcileAfter > TimeSpan.FromHours(1))
            throw new InvalidOperationException($"{Section}:ReconcileAfter must be from 0 to 1 hour, not {ReconcileAfter}.");
        if (MaxFileBytes is < 1024 or > 512L * 1024 * 1024)
            throw new InvalidOperationException($"{Section}:MaxFileBytes must be from 1 KB to 512 MB, not {MaxFileBytes}.");
        if (MaxLineBytes < 256 || MaxLineBytes > MaxFileBytes)
            throw new InvalidOperationException($"{Section}:MaxLineBytes must be at least 256 and at most MaxFileBytes ({MaxFileBytes}), not {MaxLineBytes}.");
        if (MaxOpenAILines is < 1 or > 50_000)
            throw new InvalidOperationException($"{Section}:MaxOpenAILines must be 1-50000 (OpenAI's limit), not {MaxOpenAILines}.");
        if (MaxAnthropicRequests is < 1 or > 100_000)
            throw new InvalidOperationException($"{Section}:MaxAnthropicRequests must be 1-100000 (Anthropic's limit), not {MaxAnthropicRequests}.");
    }
}
