namespace Bursar.Core.Ledger;

public sealed class LedgerWriterOptions
{
    /// <summary>Records held in memory before new ones go straight to the spool. Default 65,536.</summary>
    public int QueueCapacity { get; set; } = 65_536;

    /// <summary>Most records written to the store in one transaction. Default 512.</summary>
    public int MaxBatchSize { get; set; } = 512;

    /// <summary>How long the writer waits for a batch to fill before committing what it has. Default 50 ms: a record reaches the store within this (plus the commit), and a busy gateway commits in large batches.</summary>
    public TimeSpan FlushInterval { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Folder for the durable spool: batches are journaled here before they reach the store, and stay here while the store is down.</summary>
    public string SpoolDirectory { get; set; } = Path.Combine(".bursar", "spool");

    /// <summary>Wait before retrying the store after a failure. Default 2 s.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromSeconds(2);

    public void Validate()
    {
        if (QueueCapacity < 1) throw new ArgumentOutOfRangeException(nameof(QueueCapacity), QueueCapacity, "Ledger QueueCapacity must be at least 1.");
        if (MaxBatchSize < 1) throw new ArgumentOutOfRangeException(nameof(MaxBatchSize), MaxBatchSize, "Ledger MaxBatchSize must be at least 1.");
        if (string.IsNullOrWhiteSpace(SpoolDirectory)) throw new ArgumentException("Ledger SpoolDirectory must be set.", nameof(SpoolDirectory));
    }
}
