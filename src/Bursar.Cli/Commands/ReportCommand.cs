using Bursar.Hosting;
using System.CommandLine;
using Bursar.Core.Reporting;

namespace Bursar.Cli.Commands;

internal static class ReportCommand
{
    private static readonly string Dimensions = string.Join(", ", Enum.GetNames<ReportDimension>().Where(n => n != "All").Select(n => n.ToLowerInvariant()));

    public static Command Create()
    {
        var by = new Option<ReportDimension>("--by")
        {
            Description = "Group by: " + Dimensions,
            HelpName = "dimension",
            DefaultValueFactory = _ => ReportDimension.Feature,
            CustomParser = r =>
            {
                var text = r.Tokens.Count == 0 ? "" : r.Tokens[0].Value;
                if (Enum.TryParse<ReportDimension>(text, ignoreCase: true, out var d) && Enum.IsDefined(d) && !int.TryParse(text, out _)) return d;
                r.AddError($"--by {TerminalText.Escape(text)} is not a report dimension; use one of: {Dimensions}.");
                return ReportDimension.Feature;
            },
        };
        var format = new Option<string>("--format") { Description = "table, csv or json", DefaultValueFactory = _ => "table" };
        format.AcceptOnlyFromAmong("table", "csv", "json");
        var days = new Option<int?>("--days") { Description = "Only the last N days (default: everything)" };
        var from = new Option<string?>("--from") { Description = "Window start, ISO 8601 (e.g. 2026-11-01 or 2026-11-01T09:00Z); widened to the hour" };
        var to = new Option<string?>("--to") { Description = "Window end (exclusive), ISO 8601; default now" };
        var cache = new Option<bool>("--cache") { Description = "Prompt- and response-cache verification per route: hit ratio, net saving, routes where caching costs more than it saves" };
        var cmd = new Command("report", "Spend, calls and tokens from the ledger's rollups, grouped by a tag, with cost per call, the top cost drivers, savings per lever, cost per completed task and the trend per day")
            { by, format, days, from, to, cache };
        cmd.SetAction(async (pr, ct) =>
        {
            var store = CliOptions.OpenStore(pr);
            if (!ReportWindow.TryParse(pr.GetValue(from), pr.GetValue(to), pr.GetValue(days), TimeProvider.System.GetUtcNow(), out var window, out var error))
            {
                await Console.Error.WriteLineAsync("--" + error);
                return 2;
            }
            var (start, end) = window;
            if (pr.GetValue(cache))
            {
                ReportTables.Write(await CacheReport.QueryAsync(store, start, end, Bursar.Hosting.BursarServices.LoadCatalog(store, new Bursar.Hosting.BursarOptions()), ct));
                return 0;
            }
            var report = await SpendReport.QueryAsync(store, pr.GetValue(by), start, end, ct, Bursar.Hosting.BursarServices.LoadCatalog(store, new Bursar.Hosting.BursarOptions()));
            switch (pr.GetValue(format))
            {
                case "csv": Console.Write(report.ToCsv()); break;
                case "json": Console.WriteLine(report.ToJson()); break;
                default: ReportTables.Write(report); break;
            }
            return 0;
        });
        return cmd;
    }
}
