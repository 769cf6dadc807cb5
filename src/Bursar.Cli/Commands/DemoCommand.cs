using Bursar.Hosting;
using System.CommandLine;
using System.Diagnostics;
using Spectre.Console;
using Microsoft.Extensions.Hosting;
using Bursar.Core.Ledger;
using Bursar.Core.Reporting;
using Bursar.Gateway.Demo;
using Bursar.Gateway.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Bursar.Cli.Commands;

/// <summary>
/// <c>bursar demo</c>: starts the gateway on the Simulator, drives a mixed workload from several tagged features
/// through both wire formats (streamed and not, tools, prompt caching), shows progress, then prints the cost report.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var calls = new Option<int>("--calls") { Description = "Number of calls to drive", DefaultValueFactory = _ => 300 };
        // one call at a time by default: the same figures every run (calls in parallel race for prompt-cache writes and budget reservations)
        var concurrency = new Option<int>("--concurrency") { Description = "Calls in flight at once (default 1: the same figures every run; more calls at once can move a few tokens between runs)", DefaultValueFactory = _ => 1 };
        var serve = new Option<bool>("--serve") { Description = "Afterwards keep the gateway running with the dashboard (http://127.0.0.1:8080/dashboard) until Ctrl+C" };
        var port = new Option<int?>("--port") { Description = "With --serve: the port of the dashboard and gateway (default 8080)" };
        var cmd = new Command("demo", "Run the gateway on the built-in Simulator, drive a tagged mixed workload through it, and print the cost report") { calls, concurrency, serve, port };
        cmd.SetAction(async (pr, ct) =>
        {
            var dir = DemoDirectory(pr);
            var keepServing = pr.GetValue(serve);
            // with --serve the demo runs on the gateway that keeps serving: /metrics and the dashboard show its calls at once
            string? adminKey = null;
            var urls = "http://127.0.0.1:0";
            if (keepServing)
            {
                var p = pr.GetValue(port) ?? 8080;
                if (p is < 1 or > 65535) throw new CliException($"--port must be 1-65535, not {p}.");
                adminKey = "demo-admin-" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8));
                urls = $"http://127.0.0.1:{p}";
            }
            var app = GatewayHost.Build(CliOptions.HostArgs(pr, urls, adminKey is null ? null : [$"--Bursar:AdminKey={adminKey}"], dir),
                b => CliOptions.QuietHost(b, keepServing ? LogLevel.Warning : LogLevel.Error));
            await app.StartAsync(ct); // a busy --port stops here, before the workload
            var code = await RunAsync(app, dir, pr.GetValue(calls), Math.Max(1, pr.GetValue(concurrency)), keepServing, ct);
            if (!keepServing) return code; // RunAsync stopped and disposed the gateway to drain the ledger
            var url = ServerUrl(app);
            if (!app.Lifetime.ApplicationStopping.IsCancellationRequested) Console.WriteLine($"\nDashboard: {url}/dashboard  (admin key: {adminKey})  metrics: {url}/metrics  Ctrl+C or SIGTERM stops it.");
            await app.WaitForShutdownAsync(CancellationToken.None); // the host handles SIGINT / SIGTERM: Kestrel stops, the ledger drains
            await app.DisposeAsync();
            return 0;
        });
        return cmd;
    }

    private static string ServerUrl(WebApplication app) =>
        app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();

    /// <summary>
    /// Where the demo writes: the data directory the user named, added to; otherwise <c>.bursar-demo</c>, started fresh
    /// each run so every run prints the same figures (run ids, keys and budgets of earlier runs would pile up).
    /// </summary>
    private static string DemoDirectory(ParseResult pr)
    {
        if (CliOptions.DataDirectoryGiven(pr)) return CliOptions.DataDirectory(pr, create: true);
        const string dir = ".bursar-demo";
        Directory.CreateDirectory(dir);
        foreach (var f in new[] { "bursar.db", "bursar.db-wal", "bursar.db-shm" })
            File.Delete(Path.Combine(dir, f));
        if (Directory.Exists(Path.Combine(dir, "spool"))) Directory.Delete(Path.Combine(dir, "spool"), recursive: true);
        Directory.CreateDirectory(dir);
        return dir;
    }

    private static async Task<int> RunAsync(WebApplication app, string dir, int total, int concurrency, bool keepServing, CancellationToken ct)
    {
        // Ctrl+C / SIGTERM stop the host: the workload stops with it, and the ledger drains below
        using var stopping = CancellationTokenSource.CreateLinkedTokenSource(ct, app.Lifetime.ApplicationStopping);
        ct = stopping.Token;
        var url = ServerUrl(app);
        var store = app.Services.GetRequiredService<Bursar.Core.Storage.IBursarStore>();
        var before = await store.CountAsync(ct);
        Console.WriteLine($"Bursar demo: gateway on {url}, providers simulated, ledger in {store.Location}");

        try
        {
            await DriveWithProgressAsync(app, url, total, concurrency, ct);
        }
        catch (OperationCanceledException) when (app.Lifetime.ApplicationStopping.IsCancellationRequested)
        {
            // Ctrl+C / SIGTERM during the workload: the calls made so far are in the ledger once the gateway has drained
            Console.WriteLine("\nStopped before the end of the workload; the ledger keeps every call made so far.");
            if (!keepServing)
            {
                await app.StopAsync(CancellationToken.None);
                await app.DisposeAsync();
            }
            return 0;
        }
        if (keepServing) await LedgerLandedAsync(app, store, before + total); // the gateway keeps serving: wait for the rows instead
        else
        {
            await app.StopAsync(CancellationToken.None); // drains the ledger queue into SQLite
            await app.DisposeAsync();
        }

        var records = (await store.ReadAsync(new LedgerQuery { Limit = int.MaxValue }, CancellationToken.None)).Skip((int)before).ToArray();
        Console.WriteLine($"\n{records.Length} calls metered into the ledger.\n");
        var demoCatalog = Bursar.Hosting.BursarServices.LoadCatalog(store, new Bursar.Hosting.BursarOptions());
        // the spend by feature and by model; the sections that do not depend on the grouping (drivers, levers, tasks) once
        ReportTables.Write(SpendReport.Build(records, ReportDimension.Feature, demoCatalog), sections: false);
        Console.WriteLine();
        ReportTables.Write(SpendReport.Build(records, ReportDimension.Model, demoCatalog));
        Console.WriteLine();
        var reads = records.Sum(r => r.CacheReadTokens);
        Console.WriteLine($"Prompt-cache reads: {reads:N0} tokens across {records.Count(r => r.CacheReadTokens > 0)} calls.");
        var refused = records.Where(r => r.Outcome == "refused").ToArray();
        if (refused.Length > 0) Console.WriteLine($"Refused before any spend: {refused.Length} calls ({string.Join(", ", refused.GroupBy(r => r.ErrorType).Select(g => $"{g.Count()} {g.Key}"))}), e.g. customer-e's $0.02 monthly budget.");
        Console.WriteLine($"Explore further: bursar report --by team | --by customer | --by day | --format csv, bursar simulate (what each lever would save)   (--data-dir {dir})");
        if (!keepServing) Console.WriteLine("Charts: bursar demo --serve, then http://127.0.0.1:8080/dashboard");
        return 0;
    }

    /// <summary>
    /// Drives the workload with its progress: a live Spectre.Console bar on a terminal; in a pipe or file, a line at every tenth
    /// (done, rate, refused by budget, failed).
    /// </summary>
    private static async Task DriveWithProgressAsync(WebApplication app, string url, int total, int concurrency, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        string Status(DemoWorkload.Progress p) =>
            $"{p.Done}/{p.Total} calls  {p.Done / Math.Max(0.001, sw.Elapsed.TotalSeconds):F0}/s  {p.Refused} refused by budget  {p.Failed} failed";
        if (Terminal.Redirected)
        {
            var gate = new Lock();
            await DemoWorkload.DriveAsync(app.Services, url, total, concurrency, p =>
            {
                if (p.Done % Math.Max(1, p.Total / 10) != 0 && p.Done != p.Total) return;
                lock (gate) Console.WriteLine("  " + Status(p));
            }, ct);
            return;
        }
        await Terminal.Out.Progress()
            .Columns(new ProgressBarColumn(), new PercentageColumn(), new TaskDescriptionColumn { Alignment = Justify.Left })
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask(Status(new(0, total, 0, 0)), maxValue: total);
                await DemoWorkload.DriveAsync(app.Services, url, total, concurrency, p =>
                {
                    // numbers only: nothing here is read from users, so the description needs no markup escaping
                    task.Value = p.Done;
                    task.Description = Status(p);
                }, ct);
            });
    }

    /// <summary>Waits (without stopping the gateway) until the ledger writer has landed the workload's rows, or has nothing left to write.</summary>
    private static async Task LedgerLandedAsync(WebApplication app, Bursar.Core.Storage.IBursarStore store, long expected)
    {
        var writer = app.Services.GetRequiredService<Bursar.Core.Ledger.LedgerWriter>();
        var quiet = 0;
        for (var i = 0; i < 300; i++)
        {
            if (await store.CountAsync(CancellationToken.None) >= expected) return;
            quiet = writer.Pending == 0 ? quiet + 1 : 0;
            if (quiet >= 10) return; // nothing queued for a second: every call that leaves a row has left it
            await Task.Delay(100, CancellationToken.None);
        }
    }

}
