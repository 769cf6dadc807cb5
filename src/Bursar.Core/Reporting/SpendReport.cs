using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;

namespace Bursar.Core.Reporting;

/// <summary>
/// One row of a spend report. <see cref="Cost"/> sums the priced calls only; when some calls are unpriced the row's
/// total is unknown: JSON says <c>"cost": null</c> (the known part is <c>priced_cost</c>) and text says "+ unpriced".
/// </summary>
public sealed record SpendRow(string Group, long Calls, long UnpricedCalls, long InputTokens, long CachedInputTokens, long OutputTokens,
    [property: JsonPropertyName("priced_cost")] decimal Cost, decimal Share)
{
    [JsonIgnore]
    public decimal CostPerCall => Calls == 0 ? 0 : Cost / Calls;
    /// <summary>The total cost, or null when any call in the row has no price (unknown, never $0).</summary>
    [JsonPropertyName("cost")]
    public decimal? KnownCost => UnpricedCalls > 0 ? null : Cost;
    [JsonPropertyName("cost_per_call")]
    public decimal? KnownCostPerCall => UnpricedCalls > 0 ? null : CostPerCall;
    /// <summary>Calls whose usage the provider never reported (tokens and cost estimated).</summary>
    public long EstimatedCalls { get; init; }
    /// <summary>What Bursar's levers saved on these calls.</summary>
    public decimal Saved { get; init; }
    public long ErrorCalls { get; init; }
    public double AvgLatencyMs { get; init; }
    /// <summary>Calls answered by Bursar's response cache.</summary>
    public long ResponseCacheHits { get; init; }
    /// <summary>Calls a route or a budget downgrade served on another model than the one asked for.</summary>
    public long RoutedCalls { get; init; }
    /// <summary>Calls cut short by their output limit.</summary>
    public long TruncatedCalls { get; init; }
    public long CacheWriteTokens { get; init; }
    /// <summary>Calls that ran at the batch rate (provider batch lines and deferred jobs).</summary>
    public long BatchCalls { get; init; }
    /// <summary>The batch share: <see cref="BatchCalls"/> over <see cref="Calls"/>.</summary>
    public decimal BatchShare => Calls == 0 ? 0 : (decimal)BatchCalls / Calls;
    /// <summary>What the batch rate saved on these calls (the same tokens at the standard rate minus what they cost).</summary>
    public decimal SavingBatch { get; init; }
    /// <summary>Calls the context lever shortened (documents compressed, turns compacted).</summary>
    public long ContextCalls { get; init; }
    /// <summary>The input tokens the context lever removed from them (as the provider bills messages).</summary>
    public long ContextTokensRemoved { get; init; }
    /// <summary>What compaction and document compression saved on these calls, net of the cache re-written and the summary calls.</summary>
    public decimal SavingContext { get; init; }

    public static SpendRow From(string group, RollupTotals t, decimal denominator) =>
        new(group, t.Calls, t.UnpricedCalls, t.TotalInputTokens, t.CacheReadTokens, t.OutputTokens, t.Cost, denominator == 0 ? 0 : t.Cost / denominator)
        {
            Saved = t.Saved, ErrorCalls = t.ErrorCalls, AvgLatencyMs = t.Calls == 0 ? 0 : t.LatencyMsSum / t.Calls,
            ResponseCacheHits = t.ResponseCacheHits, RoutedCalls = t.RoutedCalls, TruncatedCalls = t.TruncatedCalls, CacheWriteTokens = t.CacheWriteTokens,
            EstimatedCalls = t.EstimatedCalls, BatchCalls = t.BatchCalls, SavingBatch = t.SavingBatch,
            ContextCalls = t.ContextCalls, ContextTokensRemoved = t.ContextTokensRemoved, SavingContext = t.SavingCompaction,
        };
}

/// <summary>One day of the spend trend.</summary>
public sealed record TrendPoint(DateOnly Day, long Calls, decimal Cost, decimal Saved);

/// <summary>What one lever saved over the window.</summary>
public sealed record LeverSaving(string Lever, decimal Saved, long Calls);

/// <summary>
/// Spend, calls and tokens grouped by a dimension over a window, with totals, shares, the top cost drivers, the trend per day,
/// the savings per lever and the cost per completed task. Built from rollups (<see cref="IReportStore"/>) or from records.
/// </summary>
public sealed record SpendReport(ReportDimension By, DateTimeOffset From, DateTimeOffset To, IReadOnlyList<SpendRow> Rows, SpendRow Total,
    IReadOnlyList<SpendRow> TopDrivers, IReadOnlyList<TrendPoint> Trend, IReadOnlyList<LeverSaving> Savings, IReadOnlyList<RunCostRow> Tasks)
{
    /// <summary>The report the CLI, the admin API and the dashboard all show: four rollup reads, no ledger scan.</summary>
    /// <remarks>With <paramref name="catalog"/>, models are grouped by the catalog's model: dated ids and aliases fold into the model they price as.</remarks>
    public static async Task<SpendReport> QueryAsync(IReportStore store, ReportDimension by, DateTimeOffset from, DateTimeOffset to, CancellationToken ct, PriceCatalog? catalog = null)
    {
        var slice = await store.SliceAsync(by, from, to, ct);
        var drivers = by == ReportDimension.Driver ? slice : await store.SliceAsync(ReportDimension.Driver, from, to, ct);
        var days = by is ReportDimension.Day or ReportDimension.All ? slice : await store.SliceAsync(ReportDimension.Day, from, to, ct);
        var tasks = await store.RunCostsAsync(slice.From, slice.To, ct);
        return Build(slice, drivers, days, tasks, catalog);
    }

    /// <summary>The same report from records in memory (the demo, imports before they are stored, and the reference in tests).</summary>
    public static SpendReport Build(IEnumerable<LedgerRecord> records, ReportDimension by, PriceCatalog? catalog = null)
    {
        var list = records as IReadOnlyCollection<LedgerRecord> ?? records.ToArray();
        var (from, to) = list.Count == 0 ? (DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch)
            : (list.Min(r => r.Timestamp), list.Max(r => r.Timestamp).AddTicks(1));
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var tasks = RunRollup.Rows(RunRollup.Fold(list.OrderBy(r => r.Timestamp), seen.Add).Select(kv => (kv.Key.Feature, kv.Value)));
        return Build(RollupSlice.FromRecords(list, by, from, to), RollupSlice.FromRecords(list, ReportDimension.Driver, from, to),
            RollupSlice.FromRecords(list, ReportDimension.Day, from, to), tasks, catalog);
    }

    /// <summary>The catalog's id for a model (a dated id or an alias becomes the model it prices as); unknown models stay as they are.</summary>
    public static string CanonicalModel(PriceCatalog? catalog, string model) => catalog?.Find(model).Price?.Model ?? model;

    /// <summary>Folds groups whose model names resolve to the same catalog model.</summary>
    private static IReadOnlyList<(string Value, RollupTotals Totals)> Canonical(IReadOnlyList<(string Value, RollupTotals Totals)> groups, ReportDimension by, PriceCatalog? catalog)
    {
        if (catalog is null || by is not (ReportDimension.Model or ReportDimension.RequestedModel or ReportDimension.Driver)) return groups;
        var map = new Dictionary<string, RollupTotals>(StringComparer.Ordinal);
        foreach (var (value, t) in groups)
        {
            string key;
            if (by == ReportDimension.Driver && value.LastIndexOf(" / ", StringComparison.Ordinal) is var i and >= 0)
                key = value[..(i + 3)] + CanonicalModel(catalog, value[(i + 3)..]);
            else key = CanonicalModel(catalog, value);
            if (!map.TryGetValue(key, out var sum)) map[key] = sum = new RollupTotals();
            sum.Add(t);
        }
        return map.Select(kv => (kv.Key, kv.Value)).ToArray();
    }

    public static SpendReport Build(RollupSlice slice, RollupSlice drivers, RollupSlice days, IReadOnlyList<RunCostRow> tasks, PriceCatalog? catalog = null)
    {
        var groups = slice.By == ReportDimension.Day
            ? slice.Rows.Select(x => (x.Day.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture), x.Totals)).ToArray()
            : Canonical(slice.Groups(), slice.By, catalog);
        var all = new RollupTotals();
        foreach (var (_, t) in groups) all.Add(t);
        var denominator = all.Cost;
        var rows = groups.Select(g => SpendRow.From(g.Item1, g.Item2, denominator))
            .OrderByDescending(r => slice.By == ReportDimension.Day ? 0 : r.Cost).ThenBy(r => r.Group, StringComparer.Ordinal).ToArray();
        // the top drivers: (feature, model) pairs holding the spend, largest first, until 80% is covered (at least 3, at most 10)
        var top = new List<SpendRow>();
        decimal covered = 0;
        foreach (var d in Canonical(drivers.Groups(), ReportDimension.Driver, catalog).Select(g => SpendRow.From(g.Value, g.Totals, denominator)).OrderByDescending(r => r.Cost).ThenBy(r => r.Group, StringComparer.Ordinal))
        {
            if ((top.Count >= 3 && covered >= 0.8m) || top.Count >= 10) break;
            top.Add(d);
            covered += d.Share;
        }
        var trend = days.Rows.GroupBy(x => x.Day).OrderBy(g => g.Key).Select(g =>
        {
            var t = new RollupTotals();
            foreach (var x in g) t.Add(x.Totals);
            return new TrendPoint(g.Key, t.Calls, t.Cost, t.Saved);
        }).ToArray();
        LeverSaving[] savings =
        [
            new("output caps", all.SavingOutputCap, all.TruncatedCalls),
            new("model routing", all.SavingRouting, all.RoutedCalls),
            new("prompt caching", all.SavingPromptCache, 0),
            new("response cache", all.SavingResponseCache, all.ResponseCacheHits),
            new("batch", all.SavingBatch, all.BatchCalls),
            new("compaction", all.SavingCompaction, all.ContextCalls),
        ];
        return new SpendReport(slice.By, slice.From, slice.To, rows, SpendRow.From("TOTAL", all, denominator) with { Share = all.Cost == 0 ? 0 : 1 },
            top, trend, savings, tasks);
    }

    public string ToTable()
    {
        var sb = new StringBuilder();
        var header = new[] { By.ToString().ToLowerInvariant(), "calls", "input tok", "cached", "output tok", "cost USD", "USD/call", "saved USD", "share" };
        var cells = Rows.Append(Total).Select(r => new[]
        {
            TerminalText.Escape(r.Group), r.Calls.ToString("N0", CultureInfo.InvariantCulture) + (r.UnpricedCalls > 0 ? $" ({r.UnpricedCalls} unpriced)" : ""),
            r.InputTokens.ToString("N0", CultureInfo.InvariantCulture), r.CachedInputTokens.ToString("N0", CultureInfo.InvariantCulture),
            r.OutputTokens.ToString("N0", CultureInfo.InvariantCulture),
            CostText(r),
            r.UnpricedCalls == r.Calls && r.Calls > 0 ? "unknown" : Money(r.CostPerCall) + (r.UnpricedCalls > 0 ? " + unpriced" : ""),
            Money(r.Saved),
            r.Share.ToString("P1", CultureInfo.InvariantCulture),
        }).ToList();
        var widths = header.Select((h, i) => Math.Max(h.Length, cells.Max(c => c[i].Length))).ToArray();
        void Line(string[] c) => sb.AppendLine(string.Join("  ", c.Select((x, i) => i == 0 ? x.PadRight(widths[i]) : x.PadLeft(widths[i]))));
        Line(header);
        sb.AppendLine(string.Join("  ", widths.Select(w => new string('-', w))));
        for (var i = 0; i < cells.Count; i++)
        {
            if (i == cells.Count - 1) sb.AppendLine(string.Join("  ", widths.Select(w => new string('-', w))));
            Line(cells[i]);
        }
        if (TopDrivers.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine("Top cost drivers (feature / model):");
            foreach (var d in TopDrivers) sb.AppendLine($"  {d.Share,7:P1}  {CostText(d),12}  {TerminalText.Escape(d.Group)}");
        }
        if (Savings.Any(x => x.Saved != 0))
        {
            sb.AppendLine();
            sb.AppendLine("Saved by each lever:");
            foreach (var x in Savings.Where(x => x.Saved != 0)) sb.AppendLine($"  {x.Lever,-15} {Money(x.Saved),12}" + (x.Calls > 0 ? $"  ({x.Calls:N0} calls)" : ""));
        }
        if (Total.BatchCalls > 0)
        {
            sb.AppendLine();
            sb.AppendLine($"Batch share and saving per {By.ToString().ToLowerInvariant()} (calls at the batch rate):");
            foreach (var r in Rows.Where(r => r.BatchCalls > 0))
                sb.AppendLine($"  {TerminalText.Escape(r.Group),-24} {r.BatchCalls,8:N0} of {r.Calls,8:N0} calls  {r.BatchShare.ToString("P1", CultureInfo.InvariantCulture),7}  saved {Money(r.SavingBatch),12}");
        }
        if (Total.ContextCalls > 0 || Total.SavingContext != 0)
        {
            sb.AppendLine();
            sb.AppendLine($"Context lever per {By.ToString().ToLowerInvariant()} (compaction and document compression; saving net of cache re-writes and summary calls):");
            foreach (var r in Rows.Where(r => r.ContextCalls > 0 || r.SavingContext != 0))
                sb.AppendLine($"  {TerminalText.Escape(r.Group),-24} {r.ContextCalls,8:N0} of {r.Calls,8:N0} calls shortened  {r.ContextTokensRemoved,12:N0} tokens removed  saved {Money(r.SavingContext),12}");
        }
        if (Tasks.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine("Cost per completed task (calls sharing a run id):");
            foreach (var t in Tasks) sb.AppendLine($"  {TerminalText.Escape(t.Feature),-20} {t.Runs,6:N0} runs  {t.CallsPerRun,6:0.0} calls/run  {Money(t.CostPerRun),12}/run");
        }
        if (Trend.Count > 1)
        {
            sb.AppendLine();
            sb.AppendLine("Spend per day:");
            var max = Trend.Max(t => t.Cost);
            foreach (var t in Trend)
                sb.AppendLine($"  {t.Day:yyyy-MM-dd}  {Money(t.Cost),12}  {new string('#', max == 0 ? 0 : (int)Math.Round(30 * t.Cost / max))}");
        }
        if (Total.EstimatedCalls > 0) sb.AppendLine($"\nNOTE: {Total.EstimatedCalls} calls are estimated: the provider's usage never arrived (stream cut off, usage unreadable), so Bursar billed its own count of their tokens.");
        if (Total.UnpricedCalls > 0) sb.AppendLine($"\nWARNING: {Total.UnpricedCalls} calls used models with no price; their cost is unknown (not $0). Import prices with `bursar prices import`.");
        return sb.ToString();
    }

    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{By.ToString().ToLowerInvariant()},calls,unpriced_calls,input_tokens,cached_input_tokens,output_tokens,cost_usd,cost_per_call_usd,share,saved_usd,error_calls,priced_cost_usd,estimated_calls");
        foreach (var r in Rows.Append(Total))
            sb.AppendLine(string.Join(',', Csv(r.Group), r.Calls, r.UnpricedCalls, r.InputTokens, r.CachedInputTokens, r.OutputTokens,
                r.KnownCost?.ToString(CultureInfo.InvariantCulture) ?? "", r.KnownCostPerCall?.ToString(CultureInfo.InvariantCulture) ?? "", decimal.Round(r.Share, 6).ToString(CultureInfo.InvariantCulture),
                r.Saved.ToString(CultureInfo.InvariantCulture), r.ErrorCalls, r.Cost.ToString(CultureInfo.InvariantCulture), r.EstimatedCalls));
        return sb.ToString();
    }

    public string ToJson() => JsonSerializer.Serialize(new
    {
        by = By.ToString().ToLowerInvariant(), from = From, to = To, rows = Rows, total = Total, top_drivers = TopDrivers,
        trend = Trend, savings = Savings, tasks = Tasks.Select(t => new { t.Feature, t.Runs, t.EndedRuns, t.Calls, t.Cost, t.CostPerRun }),
    },
        new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower });

    /// <summary>A row's cost as text: "unknown" when nothing in it is priced, "$x + unpriced" when part is, and "(estimated)" when usage was estimated.</summary>
    public static string CostText(SpendRow r) =>
        (r.UnpricedCalls == r.Calls && r.Calls > 0 ? "unknown" : Money(r.Cost) + (r.UnpricedCalls > 0 ? " + unpriced" : ""))
        + (r.EstimatedCalls > 0 ? " (estimated)" : "");

    private static string Csv(string raw)
    {
        var s = TerminalText.Escape(raw);
        return s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;
    }

    public static string Money(decimal d) => d < 0.01m && d > 0 ? "$" + d.ToString("0.000000", CultureInfo.InvariantCulture) : "$" + d.ToString("#,0.0000", CultureInfo.InvariantCulture);
}
