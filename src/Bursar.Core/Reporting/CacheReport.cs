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
}

public sealed record CacheReport(IReadOnlyList<CacheRow> Rows)
{
    public static CacheReport Build(IEnumerable<LedgerRecord> records, PriceCatalog catalog)
    {
        var rows = records.GroupBy(r => $"{r.Feature ?? "(none)"} / {r.ServedModel ?? "(none)"}").Select(g =>
        {
            decimal net = 0, responseSaving = 0;
            long input = 0, read = 0, write = 0, hits = 0, volatileCalls = 0;
            foreach (var r in g)
            {
                input += r.Usage.TotalInputTokens;
                read += r.CacheReadTokens;
                write += r.Usage.CacheWriteTokens;
                if (r.SavingResponseCache > 0) { hits++; responseSaving += r.SavingResponseCache; }
                if (r.VolatilePrefix is not null && !r.VolatilePrefix.StartsWith("moved:", StringComparison.Ordinal)) volatileCalls++;
                net += PromptCacheSavingOf(r, catalog);
            }
            return new CacheRow(g.Key, g.Count(), input, read, write, net, hits, responseSaving, volatileCalls);
        }).OrderByDescending(r => Math.Abs(r.NetSavingUsd) + r.ResponseCacheSavingUsd).ThenBy(r => r.Route, StringComparer.Ordinal).ToArray();
        return new CacheReport(rows);
    }

    /// <summary>
    /// A record's prompt-caching saving: the ledger's (set by the meter with <see cref="CostCalculator.PromptCacheSaving"/>),
    /// or the same rule applied now to a record that carries cache tokens but no saving (imported logs, rows from older versions).
    /// </summary>
    public static decimal PromptCacheSavingOf(LedgerRecord r, PriceCatalog catalog)
    {
        if (r.SavingPromptCache != 0 || (r.CacheReadTokens == 0 && r.Usage.CacheWriteTokens == 0)) return r.SavingPromptCache;
        var model = r.ServedModel ?? r.RequestedModel;
        return model is not null && catalog.Find(model).Price is { } p ? CostCalculator.PromptCacheSaving(p, r.Usage, r.Batch) : 0m;
    }

    public string ToTable()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{"route (feature / model)",-48} {"calls",7} {"hit ratio",9} {"read tok",12} {"write tok",12} {"net prompt-cache saving",24} {"resp. hits",10} {"resp. saving",13}");
        foreach (var r in Rows)
        {
            sb.Append($"{TerminalText.Escape(r.Route),-48} {r.Calls,7:N0} {r.HitRatio,9:P1} {r.CacheReadTokens,12:N0} {r.CacheWriteTokens,12:N0} {SpendReport.Money(r.NetSavingUsd),24} {r.ResponseCacheHits,10:N0} {SpendReport.Money(r.ResponseCacheSavingUsd),13}");
            if (r.CostsMoreThanItSaves) sb.Append("  COSTS MORE THAN IT SAVES");
            if (r.VolatileCalls > 0) sb.Append(CultureInfo.InvariantCulture, $"  volatile prefix in {r.VolatileCalls} calls");
            sb.AppendLine();
        }
        var losing = Rows.Where(r => r.CostsMoreThanItSaves).ToArray();
        if (losing.Length > 0)
            sb.AppendLine($"\n{losing.Length} route(s) pay more for cache writes than they get back in reads: their prefixes are written but rarely reused within the TTL.");
        return sb.ToString();
    }
}
