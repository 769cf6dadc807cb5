namespace Bursar.Core.Ledger;

/// <summary>Where ledger records land. Writes must be idempotent by <see cref="LedgerRecord.Id"/>: a replayed spool never duplicates.</summary>
public interface ILedgerStore
{
    Task WriteAsync(IReadOnlyList<LedgerRecord> records, CancellationToken cancellationToken);

    Task<IReadOnlyList<LedgerRecord>> ReadAsync(LedgerQuery query, CancellationToken cancellationToken);

    Task<long> CountAsync(CancellationToken cancellationToken);
}

public sealed record LedgerQuery
{
    public DateTimeOffset? From { get; init; }
    public DateTimeOffset? To { get; init; }
    public int Limit { get; init; } = 10_000;
    /// <summary>With a limit that cuts: keep the newest records instead of the oldest (still returned oldest first).</summary>
    public bool Newest { get; init; }
    /// <summary>Only records of these routes (null: all).</summary>
    public IReadOnlyList<string>? Routes { get; init; }
}
