using System.Globalization;
using System.Text;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;

namespace Bursar.Core.Reporting;

/// <summary>Prompt-cache verification for one route (feature and model): hit ratio and the net saving, read discount minus write premium.</summary>
public sealed record CacheRow(string Route, long Calls, long InputTokens, long CacheReadTokens, long CacheWriteTokens, decimal NetSavingUsd, long ResponseCacheHits, decimal ResponseCacheSavingUsd, long VolatileCalls)
{
    /// <summary>Share of all input tokens that were read from the provider's cache.</summary>
    public decimal HitRatio => InputTokens == 0 ? 0 : (decimal)CacheReadTokens / InputTokens;
    /// <summary>True when caching on this route costs more than it saves (writes that are never read back).</summary>
    public bool CostsMoreThanItSaves => NetSavingUsd < 0;
    /// <summary>
    /// Calls with cache tokens and no recorded saving that the report could not cost either (no price for their model in the catalog, or
    /// past the report's re-costing limit): their saving is unknown, not $0, and is left out of <see cref="NetSavingUsd"/>.
    /// </summary>
    public long UncostedCalls { get; init; }
}

/// <summary>
/// Prompt- and response-cache verification per route (feature / served model). Served by the stores' rollups (the
/// <see cref="ReportDimension.Driver"/> dimension); the only ledger rows read are the calls that carry cache tokens but no recorded saving,
/// which are costed with the price catalog here as the records path does (<see cref="PromptCacheSavingOf"/>).
/// </summary>
public sealed record CacheReport(IReadOnlyList<CacheRow> Rows)
{
    /// <summary>At most this many calls without a recorded saving are read back and costed per report; the rest are counted as not costed.</summary>
    public const int DefaultRecostLimit = 200_000;

    /// <summary>What <c>bursar report --cache</c> shows: one rollup read per window, plus the calls (if any) whose saving was never recorded.</summary>
    /// <remarks>The window is widened to whole hours (whole days past the hourly retention), as <see cref="SpendReport.QueryAsync"/> widens it.</remarks>
    public static async Task<CacheReport> QueryAsync(IReportStore store, DateTimeOffset from, DateTimeOffset to, PriceCatalog catalog, CancellationToken ct, int recostLimit = DefaultRecostLimit)
    {
        var slice = await store.SliceAsync(ReportDimension.Driver, from, to, ct);
        var routes = slice.Groups();
        var uncosted = routes.Sum(g => g.Totals.UncostedCacheCalls);
        var recost = uncosted == 0 || recostLimit <= 0 ? [] : await store.ReadUncostedCacheCallsAsync(slice.From, slice.To, recostLimit, ct);
        return Build(routes, recost, catalog);
    }

    /// <summary>The same report from records in memory (the reference the rollup path is tested against).</summary>
    public static CacheReport Build(IEnumerable<LedgerRecord> records, PriceCatalog catalog)
    {
        var list = records as IReadOnlyCollection<LedgerRecord> ?? records.ToArray();
        var map = new Dictionary<string, RollupTotals>(StringComparer.Ordinal);
        foreach (var r in list)
        {
            var route = LedgerRollup.Value(r, ReportDimension.Driver);
            if (!map.TryGetValue(route, out var t)) map[route] = t = new RollupTotals();
            t.Add(r);
        }
        return Build(map.Select(kv => (kv.Key, kv.Value)).ToArray(), list.Where(RollupTotals.IsUncostedCacheCall).Select(UncostedCacheCall.Of), catalog);
    }

    /// <summary>
    /// The report from each route's totals and the calls among them that carry cache tokens but no recorded saving: those are costed now
    /// with <paramref name="catalog"/>; the ones it cannot price (or that were not read) are counted in <see cref="CacheRow.UncostedCalls"/>.
    /// </summary>
    public static CacheReport Build(IReadOnlyList<(string Route, RollupTotals Totals)> routes, IEnumerable<UncostedCacheCall> uncosted, PriceCatalog catalog)
    {
        var perPair = new Dictionary<(string?, string?), (decimal Saving, long Calls)>(); // by (feature, served model): no route name made per call
        var prices = new Dictionary<string, ModelPrice?>(StringComparer.Ordinal); // one catalog look-up per model, not per call
        foreach (var r in uncosted)
        {
            var model = r.ServedModel ?? r.RequestedModel;
            if (model is null) continue;
            ref var found = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(prices, model, out var known);
            if (!known) found = catalog.Find(model).Price;
            if (found is not { } price) continue;
            ref var sum = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(perPair, (r.Feature, r.ServedModel), out _);
            sum = (sum.Saving + CostCalculator.PromptCacheSaving(price, r.Usage, r.Batch), sum.Calls + 1);
        }
        var recosted = new Dictionary<string, (decimal Saving, long Calls)>(StringComparer.Ordinal);
        foreach (var ((feature, model), (saving, calls)) in perPair)
        {
            // (null, x) and ("(none)", x) are one route, as in the rollups
            ref var sum = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(recosted, new UncostedCacheCall(feature, model, null, false, default).Route, out _);
            sum = (sum.Saving + saving, sum.Calls + calls);
        }
        var rows = routes.Select(g =>
        {
            var t = g.Totals;
            var (saving, costed) = recosted.GetValueOrDefault(g.Route);
            return new CacheRow(g.Route, t.Calls, t.TotalInputTokens, t.CacheReadTokens, t.CacheWriteTokens, t.SavingPromptCache + saving,
                t.ResponseCacheHits, t.SavingResponseCache, t.VolatilePrefixCalls) { UncostedCalls = Math.Max(0, t.UncostedCacheCalls - costed) };
        }).OrderByDescending(r => Math.Abs(r.NetSavingUsd) + r.ResponseCacheSavingUsd).ThenBy(r => r.Route, StringComparer.Ordinal).ToArray();
        return new CacheReport(rows);
    }

    /// <summary>
    /// A record's prompt-caching saving: the ledger's (set by the meter with <see cref="CostCalculator.PromptCacheSaving"/>),
    /// or the same rule applied now to a record that carries cache tokens but no saving (imported logs, rows from older versions).
    /// </summary>
    public static decimal PromptCacheSavingOf(LedgerRecord r, PriceCatalog catalog)
    {
        if (!RollupTotals.IsUncostedCacheCall(r)) return r.SavingPromptCache;
        var model = r.ServedModel ?? r.RequestedModel;
        return model is not null && catalog.Find(model).Price is { } p ? CostCalculator.PromptCacheSaving(p, r.Usage, r.Batch) : 0m;
    }

    /// <summary>Calls in the report whose cache saving is unknown (see <see cref="CacheRow.UncostedCalls"/>).</summary>
    public long UncostedCalls => Rows.Sum(r => r.UncostedCalls);

    /// <summary>The note every printer ends with when some calls could not be costed: unknown, never shown as $0.</summary>
    public string? UncostedNote => UncostedCalls == 0 ? null : string.Create(CultureInfo.InvariantCulture,
        $"NOTE: {UncostedCalls:N0} calls carry cache tokens but no recorded saving (written by an older version, or their model had no price) and could not be costed now (no price in the catalog, or past the {DefaultRecostLimit:N0} calls a report costs): their saving is unknown and not in the net figures. Import prices with `bursar prices import`.");

    public string ToTable()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{"route (feature / model)",-48} {"calls",7} {"hit ratio",9} {"read tok",12} {"write tok",12} {"net prompt-cache saving",24} {"resp. hits",10} {"resp. saving",13}");
        foreach (var r in Rows)
        {
            sb.Append($"{TerminalText.Escape(r.Route),-48} {r.Calls,7:N0} {r.HitRatio,9:P1} {r.CacheReadTokens,12:N0} {r.CacheWriteTokens,12:N0} {SpendReport.Money(r.NetSavingUsd),24} {r.ResponseCacheHits,10:N0} {SpendReport.Money(r.ResponseCacheSavingUsd),13}");
            if (r.CostsMoreThanItSaves) sb.Append("  COSTS MORE THAN IT SAVES");
            if (r.VolatileCalls > 0) sb.Append(CultureInfo.InvariantCulture, $"  volatile prefix in {r.VolatileCalls} calls");
            if (r.UncostedCalls > 0) sb.Append(CultureInfo.InvariantCulture, $"  {r.UncostedCalls} calls not costed");
            sb.AppendLine();
        }
        var losing = Rows.Where(r => r.CostsMoreThanItSaves).ToArray();
        if (losing.Length > 0)
            sb.AppendLine($"\n{losing.Length} route(s) pay more for cache writes than they get back in reads: their prefixes are written but rarely reused within the TTL.");
        if (UncostedNote is { } note) sb.AppendLine("\n" + note);
        return sb.ToString();
    }
}
