namespace Bursar.Core.Batch;

/// <summary>The <c>Bursar:Deferral</c> section: deferred calls gathered into provider batches. Validated once at start.</summary>
public sealed class DeferralOptions
{
    public const string Section = "Bursar:Deferral";

    /// <summary>Jobs per provider batch: a deployment and model's queue is flushed as soon as it holds this many. Default 1,000 (at most 50,000, OpenAI's per-file limit).</summary>
    public int MaxBatchSize { get; set; } = 1_000;

    /// <summary>The longest a job waits in the queue before its batch is sent, however small. Default 15 minutes.</summary>
    public TimeSpan MaxWait { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>How often the flusher looks at the queue. Default 5 seconds.</summary>
    public TimeSpan FlushInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>The shortest delay a caller may ask for (a batch needs time to run). Default 1 minute.</summary>
    public TimeSpan MinDelay { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>The longest delay: a provider batch's completion window. 24 hours, fixed.</summary>
    public static readonly TimeSpan MaxDelay = TimeSpan.FromHours(24);

    public void Validate()
    {
        if (MaxBatchSize is < 1 or > 50_000)
            throw new InvalidOperationException($"{Section}:MaxBatchSize must be 1-50000 (OpenAI takes at most 50,000 requests per batch, Anthropic 100,000), not {MaxBatchSize}.");
        if (MaxWait <= TimeSpan.Zero || MaxWait >= MaxDelay)
            throw new InvalidOperationException($"{Section}:MaxWait must be more than zero and less than 24 hours (the batch window), not {MaxWait}.");
        if (FlushInterval < TimeSpan.FromMilliseconds(10) || FlushInterval > MaxWait)
            throw new InvalidOperationException($"{Section}:FlushInterval must be from 10 ms to MaxWait ({MaxWait}), not {FlushInterval}.");
        if (MinDelay < TimeSpan.Zero || MinDelay > MaxDelay)
            throw new InvalidOperationException($"{Section}:MinDelay must be from 0 to 24 hours, not {MinDelay}.");
    }
}
