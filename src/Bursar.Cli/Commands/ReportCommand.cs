using System.CommandLine;
using Bursar.Core.Ledger;
using Bursar.Core.Reporting;

namespace Bursar.Cli.Commands;

internal static class ReportCommand
{
    public static Command Create()
    {
        var by = new Option<ReportDimension>("--by") { Description = "Group by: feature, team, customer, model, task, template, key, day, provider, outcome", DefaultValueFactory = _ => ReportDimension.Feature };
        var format = new Option<string>("--format") { Description = "table, csv or json", DefaultValueFactory = _ => "table" };
        var days = new Option<int?>("--days") { Description = "Only the last N days" };
        var cache = new Option<bool>("--cache") { Description = "Prompt- and response-cache verification per route: hit ratio, net saving, routes where caching costs more than it saves" };
        var cmd = new Command("report", "Spend, calls and tokens from the ledger, grouped by a tag, with cost per call and the top cost drivers") { by, format, days, cache };
        cmd.SetAction(async (pr, ct) =>
        {
            var store = CliOptions.OpenStore(pr);
            var from = pr.GetValue(days) is { } d ? TimeProvider.System.GetUtcNow().AddDays(-d) : (DateTimeOffset?)null;
            var records = await store.ReadAsync(new LedgerQuery { From = from, Limit = int.MaxValue }, ct);
            if (pr.GetValue(cache))
            {
                Console.Write(CacheReport.Build(records, Bursar.Gateway.Hosting.GatewayHost.LoadCatalog(store, new Bursar.Gateway.Hosting.BursarOptions())).ToTable());
                return 0;
            }
            var report = SpendReport.Build(records, pr.GetValue(by));
            Console.Write(pr.GetValue(format) switch
            {
                "csv" => report.ToCsv(),
                "json" => report.ToJson() + Environment.NewLine,
                _ => report.ToTable(),
            });
            return 0;
        });
        return cmd;
    }
}
