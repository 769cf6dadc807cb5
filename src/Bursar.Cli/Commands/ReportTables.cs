using System.Globalization;
using Spectre.Console;
using Bursar.Core.Reporting;
using static Bursar.Cli.Commands.Terminal;

namespace Bursar.Cli.Commands;

/// <summary>The spend and cache reports as terminal tables (the CSV and JSON forms stay <see cref="SpendReport.ToCsv"/> and <see cref="SpendReport.ToJson"/>).</summary>
internal static class ReportTables
{
    private static string N(long n) => n.ToString("N0", CultureInfo.InvariantCulture);

    private static string[] Cells(SpendRow r) =>
    [
        Safe(r.Group),
        N(r.Calls) + (r.UnpricedCalls > 0 ? $" ({r.UnpricedCalls} unpriced)" : ""),
        N(r.InputTokens), N(r.CachedInputTokens), N(r.OutputTokens),
        Safe(SpendReport.CostText(r)),
        Safe(r.UnpricedCalls == r.Calls && r.Calls > 0 ? "unknown" : SpendReport.Money(r.CostPerCall) + (r.UnpricedCalls > 0 ? " + unpriced" : "")),
        Safe(SpendReport.Money(r.Saved)),
        r.Share.ToString("P1", CultureInfo.InvariantCulture),
    ];

    /// <summary>The grouped table with its TOTAL row; with <paramref name="sections"/>, then the top drivers, the savings per lever, the cost per task and the trend.</summary>
    public static void Write(SpendReport report, bool sections = true)
    {
        var table = NewTable(Col.L(report.By.ToString().ToLowerInvariant()), Col.R("calls"), Col.R("input tok"), Col.R("cached"), Col.R("output tok"),
            Col.R("cost USD"), Col.R("USD/call"), Col.R("saved USD"), Col.R("share"));
        foreach (var r in report.Rows) table.AddRow(Cells(r));
        table.Footer(Cells(report.Total));
        Terminal.Write(table);
        if (sections) WriteSections(report);
    }

    /// <summary>The sections that do not depend on the grouping, and the notes on estimated and unpriced calls: printed once however many groupings are shown.</summary>
    public static void WriteSections(SpendReport report)
    {
        if (report.TopDrivers.Count > 0)
        {
            Line();
            Line("Top cost drivers (feature / model):");
            var t = NewTable(Col.L("feature / model"), Col.R("cost USD"), Col.R("share"));
            foreach (var d in report.TopDrivers) t.AddRow(Safe(d.Group), Safe(SpendReport.CostText(d)), d.Share.ToString("P1", CultureInfo.InvariantCulture));
            Terminal.Write(t);
        }
        if (report.Savings.Any(x => x.Saved != 0))
        {
            Line();
            Line("Saved by each lever:");
            var t = NewTable(Col.L("lever"), Col.R("saved USD"), Col.R("calls"));
            foreach (var x in report.Savings.Where(x => x.Saved != 0)) t.AddRow(Safe(x.Lever), Safe(SpendReport.Money(x.Saved)), x.Calls > 0 ? N(x.Calls) : "-");
            Terminal.Write(t);
        }
        if (report.Tasks.Count > 0)
        {
            Line();
            Line("Cost per completed task (calls sharing a run id):");
            var t = NewTable(Col.L("feature"), Col.R("runs"), Col.R("calls/run"), Col.R("USD/run"));
            foreach (var x in report.Tasks)
                t.AddRow(Safe(x.Feature), N(x.Runs), x.CallsPerRun.ToString("0.0", CultureInfo.InvariantCulture), Safe(SpendReport.Money(x.CostPerRun)));
            Terminal.Write(t);
        }
        if (report.Trend.Count > 1)
        {
            Line();
            Line("Spend per day:");
            var max = report.Trend.Max(x => x.Cost);
            var t = NewTable(Col.L("day (UTC)"), Col.R("calls"), Col.R("cost USD"), Col.L(""));
            foreach (var x in report.Trend)
                t.AddRow(x.Day.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture), N(x.Calls), Safe(SpendReport.Money(x.Cost)),
                    new string('#', max == 0 ? 0 : (int)Math.Round(30 * x.Cost / max)));
            Terminal.Write(t);
        }
        if (report.Total.EstimatedCalls > 0)
            Line($"\nNOTE: {report.Total.EstimatedCalls} calls are estimated: the provider's usage never arrived (stream cut off, usage unreadable), so Bursar billed its own count of their tokens.");
        if (report.Total.UnpricedCalls > 0)
            Line($"\nWARNING: {report.Total.UnpricedCalls} calls used models with no price; their cost is unknown (not $0). Import prices with `bursar prices import`.");
    }

    public static void Write(CacheReport report)
    {
        var t = NewTable(Col.L("route (feature / model)"), Col.R("calls"), Col.R("hit ratio"), Col.R("read tok"), Col.R("write tok"),
            Col.R("net prompt-cache saving"), Col.R("resp. hits"), Col.R("resp. saving"), Col.L("note"));
        foreach (var r in report.Rows)
        {
            var note = string.Join("; ", new[] { r.CostsMoreThanItSaves ? "COSTS MORE THAN IT SAVES" : null, r.VolatileCalls > 0 ? $"volatile prefix in {r.VolatileCalls} calls" : null, r.UncostedCalls > 0 ? $"{r.UncostedCalls} calls not costed" : null }.Where(x => x is not null));
            t.AddRow(Safe(r.Route), N(r.Calls), r.HitRatio.ToString("P1", CultureInfo.InvariantCulture), N(r.CacheReadTokens), N(r.CacheWriteTokens),
                Safe(SpendReport.Money(r.NetSavingUsd)), N(r.ResponseCacheHits), Safe(SpendReport.Money(r.ResponseCacheSavingUsd)), note);
        }
        Terminal.Write(t);
        var losing = report.Rows.Count(r => r.CostsMoreThanItSaves);
        if (losing > 0)
            Line($"{losing} route(s) pay more for cache writes than they get back in reads: their prefixes are written but rarely reused within the TTL.");
        if (report.UncostedNote is { } uncosted) Line("\n" + uncosted);
    }
}
