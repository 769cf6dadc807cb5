namespace Bursar.Core.Ledger;

/// <summary>When the ledger journal is forced to the disk (fsync). Either way, a record is in the journal before its call's last byte reaches the caller.</summary>
public enum LedgerFsync
{
    /// <summary>
    /// The record is written to the operating system before the call's last byte (it survives the gateway process
    /// being killed, <c>kill -9</c> included), and the journal is fsynced every <see cref="LedgerWriterOptions.FsyncInterval"/>
    /// in the background: a power loss or kernel crash can lose the records of the last interval. The default.
    /// </summary>
    Interval,

    /// <summary>
    /// The call's last byte waits until its record is fsynced (group commit: one fsync serves every record appended
    /// meanwhile), so it survives a power loss too; each call pays one fsync of latency (see bench/RESULTS.md).
    /// </summary>
    Always,
}

/// <summary>The <c>Bursar:Ledger</c> configuration section. Validated once when the writer is built.</summary>
public sealed class LedgerWriterOptions
{
    public const string Section = "Bursar:Ledger";

    /// <summary>Records held in memory for the store writer. Past this, records stay only in the journal and are replayed from it. Default 65,536.</summary>
    public int QueueCapacity { get; set; } = 65_536;

    /// <summary>Most records written to the store in one transaction. Default 512.</summary>
    public int MaxBatchSize { get; set; } = 512;

    /// <summary>How long the writer waits for a batch to fill before committing what it has. Default 50 ms: a record reaches the store within this (plus the commit), and a busy gateway commits in large batches.</summary>
    public TimeSpan FlushInterval { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Folder of the journal: every record is appended here before its call ends, and stays here until the store has committed it. Default <c>{DataDirectory}/spool</c>.</summary>
    public string SpoolDirectory { get; set; } = Path.Combine(".bursar", "spool");

    /// <summary>Wait before retrying the store after a failure. Default 2 s.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>When the journal is fsynced: <see cref="LedgerFsync.Interval"/> (default) or <see cref="LedgerFsync.Always"/>.</summary>
    public LedgerFsync Fsync { get; set; } = LedgerFsync.Interval;

    /// <summary>With <see cref="LedgerFsync.Interval"/>: how often the journal is fsynced. Default 100 ms.</summary>
    public TimeSpan FsyncInterval { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>A journal segment is closed and a new one started past this size. Default 16 MiB.</summary>
    public long SegmentBytes { get; set; } = 16L * 1024 * 1024;

    /// <summary>
    /// How much lower than the request path the ledger's background threads (the store writer and the journal's fsync) run:
    /// on Linux, their nice value is the process's plus this, so on a busy machine a request's thread wins the CPU over a
    /// batch of rows (records wait in the journal and the queue meanwhile, nothing is lost). 0 runs them at the process's
    /// priority; ignored on other systems. Default 10; 0 to 19.
    /// </summary>
    public int BackgroundNice { get; set; } = 10;

    public LedgerWriterOptions Clone() => (LedgerWriterOptions)MemberwiseClone();

    public void Validate()
    {
        if (QueueCapacity < 1) throw new ArgumentOutOfRangeException(nameof(QueueCapacity), QueueCapacity, "Bursar:Ledger:QueueCapacity must be at least 1.");
        if (MaxBatchSize < 1) throw new ArgumentOutOfRangeException(nameof(MaxBatchSize), MaxBatchSize, "Bursar:Ledger:MaxBatchSize must be at least 1.");
        if (string.IsNullOrWhiteSpace(SpoolDirectory)) throw new ArgumentException("Bursar:Ledger:SpoolDirectory must be set.", nameof(SpoolDirectory));
        if (FlushInterval < TimeSpan.Zero || FlushInterval > TimeSpan.FromMinutes(1))
            throw new ArgumentOutOfRangeException(nameof(FlushInterval), FlushInterval, "Bursar:Ledger:FlushInterval must be between 0 and 00:01:00.");
        if (FsyncInterval <= TimeSpan.Zero || FsyncInterval > TimeSpan.FromMinutes(1))
            throw new ArgumentOutOfRangeException(nameof(FsyncInterval), FsyncInterval, "Bursar:Ledger:FsyncInterval must be above 0 and at most 00:01:00.");
        if (SegmentBytes < 4096) throw new ArgumentOutOfRangeException(nameof(SegmentBytes), SegmentBytes, "Bursar:Ledger:SegmentBytes must be at least 4096.");
        if (BackgroundNice is < 0 or > 19) throw new ArgumentOutOfRangeException(nameof(BackgroundNice), BackgroundNice, "Bursar:Ledger:BackgroundNice must be between 0 and 19.");
        if (!Enum.IsDefined(Fsync)) throw new ArgumentOutOfRangeException(nameof(Fsync), Fsync, "Bursar:Ledger:Fsync must be Interval or Always.");
    }
}
