using System.Globalization;
using Bursar.Core.Ledger;
using Bursar.Core.Usage;

namespace Bursar.Core.Reporting;

/// <summary>A dimension to group ledger records by. <see cref="All"/> is the single group holding every call.</summary>
public enum ReportDimension { Feature, Team, Customer, Model, RequestedModel, Task, Template, Key, Provider, Outcome, Route, Driver, Day, All }

/// <summary>
/// Running totals of a set of ledger records: the one aggregation every report, rollup table and import uses.
/// Money is summed as exact <see cref="decimal"/>; a call with no price adds to <see cref="UnpricedCalls"/>, never to <see cref="Cost"/>.
/// </summary>
public sealed class RollupTotals
{
    public long Calls { get; set; }
    public long UnpricedCalls { get; set; }
    public long ErrorCalls { get; set; }
    public long ResponseCacheHits { get; set; }
    public long RoutedCalls { get; set; }
    public long TruncatedCalls { get; set; }
    /// <summary>Calls whose usage the provider never reported: their tokens and cost are Bursar's estimate.</summary>
    public long EstimatedCalls { get; set; }
    /// <summary>Calls that ran at the batch rate (a provider batch's line, a deferred job's).</summary>
    public long BatchCalls { get; set; }
    /// <summary>Calls the context lever shortened (documents compressed, turns compacted) and the input tokens it removed from them.</summary>
    public long ContextCalls { get; set; }
    public long ContextTokensRemoved { get; set; }
    /// <summary>Calls whose prompt prefix held a volatile value (a timestamp, an id) that defeats the provider's cache; one Bursar moved out of the prefix does not count.</summary>
    public long VolatilePrefixCalls { get; set; }
    /// <summary>
    /// Calls that carry cache tokens but no recorded prompt-cache saving (<see cref="IsUncostedCacheCall"/>): rows from versions that did not
    /// record it, or a model with no price when the call was written. Their saving is not in <see cref="SavingPromptCache"/>.
    /// </summary>
    public long UncostedCacheCalls { get; set; }
    public long InputTokens { get; set; }
    public long CacheReadTokens { get; set; }
    public long CacheWriteTokens { get; set; }
    public long OutputTokens { get; set; }
    public double LatencyMsSum { get; set; }
    public decimal Cost { get; set; }
    public decimal SavingRouting { get; set; }
    public decimal SavingResponseCache { get; set; }
    public decimal SavingPromptCache { get; set; }
    public decimal SavingBatch { get; set; }
    public decimal SavingCompaction { get; set; }
    public decimal SavingOutputCap { get; set; }

    /// <summary>Every input token the provider billed, cached or not.</summary>
    public long TotalInputTokens => InputTokens + CacheReadTokens + CacheWriteTokens;
    public decimal Saved => SavingRouting + SavingResponseCache + SavingPromptCache + SavingBatch + SavingCompaction + SavingOutputCap;

    /// <summary>The prefix held a volatile value the caller left in place (<c>moved:</c> marks one Bursar moved out of the cached prefix).</summary>
    public static bool HasVolatilePrefix(LedgerRecord r) => r.VolatilePrefix is not null && !r.VolatilePrefix.StartsWith("moved:", StringComparison.Ordinal);

    /// <summary>
    /// The record read or wrote the provider's prompt cache but carries no prompt-cache saving. The stores keep the same condition
    /// (their partial index on these rows and the PostgreSQL backfill), so the cache report can re-cost exactly these calls from the ledger.
    /// </summary>
    public static bool IsUncostedCacheCall(LedgerRecord r) =>
        r.SavingPromptCache == 0 && (r.CacheReadTokens != 0 || r.CacheWrite5mTokens != 0 || r.CacheWrite1hTokens != 0);

    public void Add(LedgerRecord r)
    {
        Calls++;
        if (!r.Priced) UnpricedCalls++;
        if (r.Outcome is not "ok") ErrorCalls++;
        if (r.SavingResponseCache > 0) ResponseCacheHits++;
        if (r.RoutingReason is not null && !r.RoutingReason.StartsWith("kept", StringComparison.Ordinal)) RoutedCalls++;
        if (r.FinishReason is "length" or "max_tokens") TruncatedCalls++;
        if (r.UsageEstimated) EstimatedCalls++;
        if (r.Batch) BatchCalls++;
        if (r.ContextTokensRemoved > 0) { ContextCalls++; ContextTokensRemoved += r.ContextTokensRemoved; }
        if (HasVolatilePrefix(r)) VolatilePrefixCalls++;
        if (IsUncostedCacheCall(r)) UncostedCacheCalls++;
        InputTokens += r.InputTokens;
        CacheReadTokens += r.CacheReadTokens;
        CacheWriteTokens += r.CacheWrite5mTokens + r.CacheWrite1hTokens;
        OutputTokens += r.OutputTokens;
        LatencyMsSum += r.LatencyMs;
        if (r.Cost is { } c) Cost += c;
        SavingRouting += r.SavingRouting;
        SavingResponseCache += r.SavingResponseCache;
        SavingPromptCache += r.SavingPromptCache;
        SavingBatch += r.SavingBatch;
        SavingCompaction += r.SavingCompaction;
        SavingOutputCap += r.SavingOutputCap;
    }

    public void Add(RollupTotals o)
    {
        Calls += o.Calls; UnpricedCalls += o.UnpricedCalls; ErrorCalls += o.ErrorCalls; ResponseCacheHits += o.ResponseCacheHits;
        RoutedCalls += o.RoutedCalls; TruncatedCalls += o.TruncatedCalls; EstimatedCalls += o.EstimatedCalls; BatchCalls += o.BatchCalls;
        ContextCalls += o.ContextCalls; ContextTokensRemoved += o.ContextTokensRemoved;
        VolatilePrefixCalls += o.VolatilePrefixCalls; UncostedCacheCalls += o.UncostedCacheCalls;
        InputTokens += o.InputTokens; CacheReadTokens += o.CacheReadTokens; CacheWriteTokens += o.CacheWriteTokens; OutputTokens += o.OutputTokens;
        LatencyMsSum += o.LatencyMsSum; Cost += o.Cost;
        SavingRouting += o.SavingRouting; SavingResponseCache += o.SavingResponseCache; SavingPromptCache += o.SavingPromptCache;
        SavingBatch += o.SavingBatch; SavingCompaction += o.SavingCompaction; SavingOutputCap += o.SavingOutputCap;
    }
}

/// <summary>One group's totals in one time bucket (an hour or a day, as Unix seconds of its start, UTC).</summary>
public readonly record struct RollupKey(ReportDimension Dimension, string Value, long BucketStart);

/// <summary>
/// How ledger records fold into rollups: the groups a record belongs to and the time buckets it lands in.
/// Stores keep hourly and daily buckets up to date as records are written, so reports read thousands of rollup rows
/// instead of scanning millions of ledger rows.
/// </summary>
public static class LedgerRollup
{
    public const long Hour = 3600, Day = 86400;
    public const string None = "(none)";

    /// <summary>The dimensions stores keep rollups for (<see cref="ReportDimension.Day"/> is derived from <see cref="ReportDimension.All"/>).</summary>
    public static readonly ReportDimension[] Stored =
    [
        ReportDimension.All, ReportDimension.Feature, ReportDimension.Team, ReportDimension.Customer, ReportDimension.Model,
        ReportDimension.RequestedModel, ReportDimension.Task, ReportDimension.Template, ReportDimension.Key, ReportDimension.Provider,
        ReportDimension.Outcome, ReportDimension.Route, ReportDimension.Driver,
    ];

    public static string Value(LedgerRecord r, ReportDimension by) => by switch
    {
        ReportDimension.All => "all",
        ReportDimension.Feature => r.Feature,
        ReportDimension.Team => r.Team,
        ReportDimension.Customer => r.Customer,
        ReportDimension.Model => r.ServedModel,
        ReportDimension.RequestedModel => r.RequestedModel,
        ReportDimension.Task => r.Task,
        ReportDimension.Template => r.Template,
        ReportDimension.Key => r.KeyId,
        ReportDimension.Provider => r.Provider,
        ReportDimension.Outcome => r.Outcome,
        ReportDimension.Route => r.Route,
        ReportDimension.Driver => $"{r.Feature ?? None} / {r.ServedModel ?? None}",
        ReportDimension.Day => r.Timestamp.UtcDateTime.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
        _ => null,
    } ?? None;

    public static long BucketOf(DateTimeOffset t, long size) => Math.DivRem(t.ToUnixTimeSeconds(), size, out var rem) * size - (rem < 0 ? size : 0);

    /// <summary>Folds records into rollup deltas, one entry per (dimension, value, bucket of <paramref name="bucketSize"/> seconds).</summary>
    public static Dictionary<RollupKey, RollupTotals> Aggregate(IEnumerable<LedgerRecord> records, long bucketSize)
    {
        var map = new Dictionary<RollupKey, RollupTotals>();
        Dictionary<(string?, string?), string>? drivers = null; // a driver's name is made once per batch, not once per record
        foreach (var r in records)
        {
            var bucket = BucketOf(r.Timestamp, bucketSize);
            foreach (var dim in Stored)
            {
                string value;
                if (dim == ReportDimension.Driver)
                {
                    drivers ??= [];
                    ref var name = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(drivers, (r.Feature, r.ServedModel), out _);
                    value = name ??= Value(r, dim);
                }
                else value = Value(r, dim);
                var key = new RollupKey(dim, value, bucket);
                if (!map.TryGetValue(key, out var t)) map[key] = t = new RollupTotals();
                t.Add(r);
            }
        }
        return map;
    }

    /// <summary>Coarser buckets from finer ones (daily deltas from hourly ones): each record is folded once, however many bucket sizes are kept.</summary>
    public static Dictionary<RollupKey, RollupTotals> Coarsen(Dictionary<RollupKey, RollupTotals> finer, long bucketSize)
    {
        var map = new Dictionary<RollupKey, RollupTotals>();
        foreach (var (k, t) in finer)
        {
            var key = k with { BucketStart = BucketOf(DateTimeOffset.FromUnixTimeSeconds(k.BucketStart), bucketSize) };
            if (!map.TryGetValue(key, out var sum)) map[key] = sum = new RollupTotals();
            sum.Add(t);
        }
        return map;
    }

    /// <summary>
    /// Splits a window into whole UTC days (read from daily rollups) and the hours at its ragged ends (hourly rollups).
    /// The window is widened to whole hours: reports answer at hour resolution.
    /// </summary>
    public static (long FromHour, long ToHour, long FromDay, long ToDay) Split(DateTimeOffset from, DateTimeOffset to)
    {
        var fromHour = BucketOf(from, Hour);
        var toHour = BucketOf(to, Hour);
        if (toHour < to.ToUnixTimeSeconds()) toHour += Hour;
        var fromDay = BucketOf(DateTimeOffset.FromUnixTimeSeconds(fromHour), Day);
        if (fromDay < fromHour) fromDay += Day;
        var toDay = BucketOf(DateTimeOffset.FromUnixTimeSeconds(toHour), Day);
        if (toDay < fromDay) toDay = fromDay;
        return (fromHour, toHour, fromDay, toDay);
    }
}

/// <summary>Groups' totals per UTC day over a window, as a store's rollups answer it.</summary>
public sealed record RollupSlice(ReportDimension By, DateTimeOffset From, DateTimeOffset To, IReadOnlyList<(string Value, DateOnly Day, RollupTotals Totals)> Rows)
{
    /// <summary>Every group's totals over the whole window.</summary>
    public IReadOnlyList<(string Value, RollupTotals Totals)> Groups()
    {
        var map = new Dictionary<string, RollupTotals>(StringComparer.Ordinal);
        foreach (var (value, _, t) in Rows)
        {
            if (!map.TryGetValue(value, out var sum)) map[value] = sum = new RollupTotals();
            sum.Add(t);
        }
        return map.Select(kv => (kv.Key, kv.Value)).ToArray();
    }

    /// <summary>Builds a slice from raw records: the reference the rollup stores are tested against, and the path for records not yet stored.</summary>
    public static RollupSlice FromRecords(IEnumerable<LedgerRecord> records, ReportDimension by, DateTimeOffset from, DateTimeOffset to)
    {
        var map = new Dictionary<(string, DateOnly), RollupTotals>();
        var dim = by == ReportDimension.Day ? ReportDimension.All : by;
        foreach (var r in records)
        {
            if (r.Timestamp < from || r.Timestamp >= to) continue;
            var key = (LedgerRollup.Value(r, dim), DateOnly.FromDateTime(r.Timestamp.UtcDateTime));
            if (!map.TryGetValue(key, out var t)) map[key] = t = new RollupTotals();
            t.Add(r);
        }
        return new RollupSlice(by, from, to, map.Select(kv => (kv.Key.Item1, kv.Key.Item2, kv.Value)).ToArray());
    }
}

/// <summary>Cost per completed task: calls sharing a run id, grouped by feature.</summary>
public sealed record RunCostRow(string Feature, long Runs, long EndedRuns, long Calls, decimal Cost)
{
    public decimal CostPerRun => Runs == 0 ? 0 : Cost / Runs;
    public decimal CallsPerRun => Runs == 0 ? 0 : (decimal)Calls / Runs;
}

/// <summary>One UTC day of one feature's runs: runs started, runs a cap or done-condition ended, their calls and cost.</summary>
public readonly record struct RunDay(long Runs, long Ended, long Calls, decimal Cost);

/// <summary>
/// How calls fold into run costs, the one rule the stores and the in-memory report share: a run counts once, on the day and feature
/// of its first call seen; each call adds its cost and an end (if it ended the run) to its own day and feature.
/// </summary>
public static class RunRollup
{
    /// <param name="isNewRun">True the first time a run id is seen (a store remembers them across writes; in memory a set does).</param>
    public static Dictionary<(long Day, string Feature), RunDay> Fold(IEnumerable<LedgerRecord> records, Func<string, bool> isNewRun)
    {
        var map = new Dictionary<(long, string), RunDay>();
        foreach (var r in records)
        {
            if (r.RunId is null) continue;
            var key = (LedgerRollup.BucketOf(r.Timestamp, LedgerRollup.Day), r.Feature ?? LedgerRollup.None);
            var t = map.GetValueOrDefault(key);
            map[key] = new RunDay(t.Runs + (isNewRun(r.RunId) ? 1 : 0), t.Ended + (r.RunEndReason is null ? 0 : 1), t.Calls + 1, t.Cost + (r.Cost ?? 0));
        }
        return map;
    }

    /// <summary>Run costs per feature over the given days, largest first; features with no run started are left out.</summary>
    public static IReadOnlyList<RunCostRow> Rows(IEnumerable<(string Feature, RunDay Day)> days) =>
        days.GroupBy(d => d.Feature, StringComparer.Ordinal)
            .Select(g => new RunCostRow(g.Key, g.Sum(x => x.Day.Runs), g.Sum(x => x.Day.Ended), g.Sum(x => x.Day.Calls), g.Sum(x => x.Day.Cost)))
            .Where(r => r.Runs > 0).OrderByDescending(r => r.Cost).ToArray();
}

/// <summary>
/// A ledger row with cache tokens but no recorded prompt-cache saving, as much of it as costing it and naming its route take
/// (<see cref="CacheReport"/>): a few columns instead of the whole row, so thousands of them read in milliseconds.
/// </summary>
public readonly record struct UncostedCacheCall(string? Feature, string? ServedModel, string? RequestedModel, bool Batch, TokenUsage Usage)
{
    public static UncostedCacheCall Of(LedgerRecord r) => new(r.Feature, r.ServedModel, r.RequestedModel, r.Batch, r.Usage);

    /// <summary>The route it belongs to (<see cref="ReportDimension.Driver"/>'s value).</summary>
    public string Route => $"{Feature ?? LedgerRollup.None} / {ServedModel ?? LedgerRollup.None}";
}

/// <summary>A store that keeps rollups as it writes the ledger and answers reports from them.</summary>
public interface IReportStore
{
    /// <summary>Totals per group and UTC day for a window (widened to whole hours). <see cref="ReportDimension.Day"/> groups everything per day.</summary>
    Task<RollupSlice> SliceAsync(ReportDimension by, DateTimeOffset from, DateTimeOffset to, CancellationToken cancellationToken);

    /// <summary>Runs started on the window's UTC days (a run counts on the day of its first call), grouped by feature, with the calls and cost of those days.</summary>
    Task<IReadOnlyList<RunCostRow>> RunCostsAsync(DateTimeOffset from, DateTimeOffset to, CancellationToken cancellationToken);

    /// <summary>
    /// The calls in [<paramref name="from"/>, <paramref name="to"/>) that carry cache tokens but no recorded prompt-cache saving
    /// (<see cref="RollupTotals.IsUncostedCacheCall"/>), oldest first, at most <paramref name="limit"/>: the only ledger rows the cache report
    /// reads (a partial index holds just these), and only the columns costing them needs, with the price catalog the store does not have.
    /// </summary>
    Task<IReadOnlyList<UncostedCacheCall>> ReadUncostedCacheCallsAsync(DateTimeOffset from, DateTimeOffset to, int limit, CancellationToken cancellationToken);
}
