using Bursar.Hosting;
using System.CommandLine;
using System.Text.Json;
using Bursar.Core.Advisor;
using Bursar.Core.Ledger;
using Bursar.Core.Routing;

namespace Bursar.Cli.Commands;

internal static class SimulateCommand
{
    public static Command Create()
    {
        var days = new Option<int>("--days") { Description = "Replay the last N days of the ledger (default 30)", DefaultValueFactory = _ => 30 };
        var example = new Option<bool>("--example") { Description = "Print the worked example of LEVERS.md from its stated assumptions" };
        var percentile = new Option<double>("--cap-percentile") { Description = "Output caps: max_tokens per task at this percentile of observed output (default 0.95)", DefaultValueFactory = _ => 0.95 };
        var margin = new Option<double>("--cap-margin") { Description = "Output caps: plus this margin (default 0.10)", DefaultValueFactory = _ => 0.10 };
        var routes = new Option<FileInfo?>("--routes") { Description = "A JSON file of route policies (the Bursar:Routing:Routes array) to replay instead of the default tier table" };
        var deferrable = new Option<string?>("--deferrable-tasks") { Description = "Comma-separated task tags that can wait for the batch API (default: batch,nightly,offline,eval,backfill,report)" };
        var trim = new Option<decimal>("--context-trim") { Description = "Tighter context: share of uncached input trimmed on long prompts (default 0.20)", DefaultValueFactory = _ => 0.20m };
        var reduction = new Option<string[]>("--context-reduction") { Description = "With --routes that turn compaction on: the share of a call's cost a strategy removes, as measured by `bursar eval compaction` on your conversations (e.g. sliding-window=0.03; repeatable). Default: calls of an agent run (x-bursar-run) on a sliding-window route are simulated per run through the stage's step decision; other calls take the share measured on the ledger's calls already on such a route, else on recorded agent conversations", AllowMultipleArgumentsPerToken = true };
        var ttl = new Option<int>("--cache-ttl-minutes") { Description = "Prompt caching: a prefix re-sent within this many minutes is a cache read (default 5)", DefaultValueFactory = _ => 5 };
        var format = new Option<string>("--format") { Description = "table or json", DefaultValueFactory = _ => "table" };
        var importFile = new Option<FileInfo?>("--import") { Description = "Replay a call log (CSV or JSONL, as `bursar import` reads it) instead of the ledger, without writing it" };
        var cmd = new Command("simulate", "What-if: replay the ledger through the levers one at a time (output caps, tier routing, prompt caching, batch, tighter context) and print the monthly cost after each")
            { days, example, percentile, margin, routes, deferrable, trim, reduction, ttl, format, importFile };
        cmd.SetAction(async (pr, ct) =>
        {
            WhatIfLadder ladder;
            if (pr.GetValue(example)) ladder = WhatIfSimulator.Example();
            else
            {
                var a = new WhatIfAssumptions
                {
                    OutputCapPercentile = pr.GetValue(percentile),
                    OutputCapMargin = pr.GetValue(margin),
                    ContextTrimShare = pr.GetValue(trim),
                    CacheTtl = TimeSpan.FromMinutes(pr.GetValue(ttl)),
                };
                if (a.OutputCapPercentile is <= 0 or > 1 || a.OutputCapMargin < 0 || a.ContextTrimShare is < 0 or >= 1 || a.CacheTtl <= TimeSpan.Zero)
                {
                    await Console.Error.WriteLineAsync("simulate: --cap-percentile must be in (0, 1], --cap-margin >= 0, --context-trim in [0, 1), --cache-ttl-minutes >= 1");
                    return 2;
                }
                if (pr.GetValue(reduction) is { Length: > 0 } given)
                {
                    var shares = new Dictionary<string, decimal>(StringComparer.Ordinal);
                    foreach (var g in given)
                    {
                        var parts = g.Split('=', 2, StringSplitOptions.TrimEntries);
                        if (parts.Length != 2 || !decimal.TryParse(parts[1], System.Globalization.NumberStyles.Number, System.Globalization.CultureInfo.InvariantCulture, out var share) || share is < 0 or >= 1
                            || !Bursar.Core.Context.CompactionPolicy.Strategies.Contains(parts[0]))
                        {
                            await Console.Error.WriteLineAsync($"simulate: --context-reduction '{g}': expected <strategy>=<share in [0, 1)>, the strategy one of {string.Join(", ", Bursar.Core.Context.CompactionPolicy.Strategies)}");
                            return 2;
                        }
                        shares[parts[0]] = share;
                    }
                    a = a with { ContextReductions = shares };
                }
                if (pr.GetValue(deferrable) is { } d) a = a with { DeferrableTasks = d.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.OrdinalIgnoreCase) };
                if (pr.GetValue(routes) is { } file)
                {
                    try
                    {
                        var list = JsonSerializer.Deserialize<List<RoutePolicy>>(await File.ReadAllTextAsync(file.FullName, ct), new JsonSerializerOptions { PropertyNameCaseInsensitive = true }) ?? [];
                        var options = new RoutingOptions { Routes = list };
                        options.Validate();
                        a = a with { Routes = options };
                    }
                    catch (Exception e) when (e is JsonException or IOException or InvalidOperationException)
                    {
                        await Console.Error.WriteLineAsync($"simulate: --routes {file.Name}: {e.Message}");
                        return 2;
                    }
                }
                var store = CliOptions.OpenStore(pr);
                var catalog = Bursar.Hosting.BursarServices.LoadCatalog(store, new Bursar.Hosting.BursarOptions());
                if (pr.GetValue(importFile) is { } log)
                {
                    if (!log.Exists) { await Console.Error.WriteLineAsync($"simulate: no file at '{log.FullName}'"); return 2; }
                    using var reader = log.OpenText();
                    var fmt = log.Name.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) ? "jsonl" : "csv";
                    var imported = Bursar.Core.Import.CallLogImporter.Read(reader, fmt, catalog, new Bursar.Core.Import.CallLogImportOptions());
                    if (imported.Skipped.Count > 0) Console.Error.WriteLine($"{imported.Skipped.Count:N0} rows skipped (first: line {imported.Skipped[0].Line}: {imported.Skipped[0].Message})");
                    if (imported.Records.Count == 0) { await Console.Error.WriteLineAsync("simulate: no rows to replay"); return 1; }
                    var first = imported.Records.Min(r => r.Timestamp);
                    var last = imported.Records.Max(r => r.Timestamp);
                    ladder = WhatIfSimulator.Run(imported.Records, catalog, a, first, last.AddSeconds(1), log.Name);
                }
                else
                {
                    var to = TimeProvider.System.GetUtcNow();
                    var from = to.AddDays(-pr.GetValue(days));
                    Console.Error.WriteLine($"reading the ledger from {from:yyyy-MM-dd HH:mm} UTC...");
                    var records = await store.ReadAsync(new LedgerQuery { From = from, To = to, Limit = int.MaxValue }, ct);
                    Console.Error.WriteLine($"replaying {records.Count:N0} calls through 5 levers...");
                    ladder = WhatIfSimulator.Run(records, catalog, a, from, to);
                }
            }
            Console.Write(pr.GetValue(format) == "json"
                ? JsonSerializer.Serialize(ladder, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }) + Environment.NewLine
                : ladder.ToTable());
            return 0;
        });
        return cmd;
    }
}
