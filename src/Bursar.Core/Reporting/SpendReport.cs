using System.Globalization;
using System.Text;
using System.Text.Json;
using Bursar.Core.Ledger;

namespace Bursar.Core.Reporting;

/// <summary>A dimension to group ledger records by.</summary>
public enum ReportDimension { Feature, Team, Customer, Model, Task, Template, Key, Day, Provider, Outcome }

/// <summary>One row of a spend report.</summary>
public sealed record SpendRow(string Group, long Calls, long UnpricedCalls, long InputTokens, long CachedInputTokens, long OutputTokens, decimal Cost, decimal Share)
{
    public decimal CostPerCall => Calls == 0 ? 0 : Cost / Calls;
}

/// <summary>Spend, calls and tokens grouped by a dimension, with totals, shares and the top cost drivers.</summary>
public sealed record SpendReport(ReportDimension By, IReadOnlyList<SpendRow> Rows, SpendRow Total, IReadOnlyList<SpendRow> TopDrivers)
{
    public static string Key(LedgerRecord r, ReportDimension by) => by switch
    {
        ReportDimension.Feature => r.Feature,
        ReportDimension.Team => r.Team,
        ReportDimension.Customer => r.Customer,
        ReportDimension.Model => r.ServedModel,
        ReportDimension.Task => r.Task,
        ReportDimension.Template => r.Template,
        ReportDimension.Key => r.KeyId,
        ReportDimension.Day => r.Timestamp.UtcDateTime.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
        ReportDimension.Provider => r.Provider,
        ReportDimension.Outcome => r.Outcome,
        _ => null,
    } ?? "(none)";

    public static SpendReport Build(IEnumerable<LedgerRecord> records, ReportDimension by)
    {
        var list = records as IReadOnlyCollection<LedgerRecord> ?? records.ToArray();
        var total = Row("TOTAL", list, 0m);
        var denominator = total.Cost == 0 ? 1 : total.Cost;
        var rows = list.GroupBy(r => Key(r, by))
            .Select(g => Row(g.Key, g.ToArray(), denominator))
            .OrderByDescending(r => r.Cost).ThenBy(r => r.Group, StringComparer.Ordinal).ToArray();
        // the top drivers: (feature, model) pairs holding the spend, largest first, until 80% is covered
        var drivers = new List<SpendRow>();
        decimal covered = 0;
        foreach (var d in list.GroupBy(r => $"{r.Feature ?? "(none)"} / {r.ServedModel ?? "(none)"}")
                     .Select(g => Row(g.Key, g.ToArray(), denominator)).OrderByDescending(r => r.Cost))
        {
            if (drivers.Count >= 3 && covered >= 0.8m) break;
            drivers.Add(d);
            covered += d.Share;
            if (drivers.Count >= 10) break;
        }
        return new SpendReport(by, rows, total with { Share = total.Cost == 0 ? 0 : 1 }, drivers);
    }

    private static SpendRow Row(string group, IReadOnlyCollection<LedgerRecord> rs, decimal denominator)
    {
        decimal cost = 0;
        long unpriced = 0, input = 0, cached = 0, output = 0;
        foreach (var r in rs)
        {
            if (r.Cost is { } c) cost += c;
            if (!r.Priced) unpriced++;
            input += r.InputTokens + r.CacheReadTokens + r.CacheWrite5mTokens + r.CacheWrite1hTokens;
            cached += r.CacheReadTokens;
            output += r.OutputTokens;
        }
        return new SpendRow(group, rs.Count, unpriced, input, cached, output, cost, denominator == 0 ? 0 : cost / denominator);
    }

    public string ToTable()
    {
        var sb = new StringBuilder();
        var header = new[] { By.ToString().ToLowerInvariant(), "calls", "input tok", "cached", "output tok", "cost USD", "USD/call", "share" };
        var cells = Rows.Append(Total).Select(r => new[]
        {
            r.Group, r.Calls.ToString("N0", CultureInfo.InvariantCulture) + (r.UnpricedCalls > 0 ? $" ({r.UnpricedCalls} unpriced)" : ""),
            r.InputTokens.ToString("N0", CultureInfo.InvariantCulture), r.CachedInputTokens.ToString("N0", CultureInfo.InvariantCulture),
            r.OutputTokens.ToString("N0", CultureInfo.InvariantCulture),
            r.UnpricedCalls == r.Calls && r.Calls > 0 ? "unknown" : Money(r.Cost) + (r.UnpricedCalls > 0 ? " + ?" : ""),
            r.UnpricedCalls == r.Calls && r.Calls > 0 ? "unknown" : Money(r.CostPerCall),
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
            foreach (var d in TopDrivers) sb.AppendLine($"  {d.Share,7:P1}  {Money(d.Cost),12}  {d.Group}");
        }
        if (Total.UnpricedCalls > 0) sb.AppendLine($"\nWARNING: {Total.UnpricedCalls} calls used models with no price; their cost is unknown (not $0). Import prices with `bursar prices import`.");
        return sb.ToString();
    }

    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{By.ToString().ToLowerInvariant()},calls,unpriced_calls,input_tokens,cached_input_tokens,output_tokens,cost_usd,cost_per_call_usd,share");
        foreach (var r in Rows.Append(Total))
            sb.AppendLine(string.Join(',', Csv(r.Group), r.Calls, r.UnpricedCalls, r.InputTokens, r.CachedInputTokens, r.OutputTokens,
                r.Cost.ToString(CultureInfo.InvariantCulture), r.CostPerCall.ToString(CultureInfo.InvariantCulture), r.Share.ToString(CultureInfo.InvariantCulture)));
        return sb.ToString();
    }

    public string ToJson() => JsonSerializer.Serialize(new { by = By.ToString().ToLowerInvariant(), rows = Rows, total = Total, top_drivers = TopDrivers },
        new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower });

    private static string Csv(string s) => s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;

    public static string Money(decimal d) => d < 0.01m && d > 0 ? "$" + d.ToString("0.000000", CultureInfo.InvariantCulture) : "$" + d.ToString("#,0.0000", CultureInfo.InvariantCulture);
}
