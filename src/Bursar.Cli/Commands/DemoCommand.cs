using System.CommandLine;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Reporting;
using Bursar.Gateway.Hosting;
using Bursar.Storage.Sqlite;
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
        var concurrency = new Option<int>("--concurrency") { Description = "Calls in flight at once", DefaultValueFactory = _ => 8 };
        var cmd = new Command("demo", "Run the gateway on the built-in Simulator, drive a tagged mixed workload through it, and print the cost report") { calls, concurrency };
        cmd.SetAction(async (pr, ct) => await RunAsync(pr, pr.GetValue(calls), Math.Max(1, pr.GetValue(concurrency)), ct));
        return cmd;
    }

    private sealed record Workload(string Feature, string Team, string Task, string Model, bool Anthropic, bool Stream, bool Tools, bool CachedPrefix, int Weight);

    private static readonly Workload[] Mix =
    [
        new("support-chat", "support", "chat", "claude-sonnet-4-5", Anthropic: true, Stream: true, Tools: false, CachedPrefix: true, Weight: 30),
        new("ticket-classify", "ops", "classification", "gpt-4o-mini", Anthropic: false, Stream: false, Tools: false, CachedPrefix: false, Weight: 25),
        new("doc-summarize", "content", "summarization", "claude-haiku-4-5", Anthropic: true, Stream: false, Tools: false, CachedPrefix: false, Weight: 15),
        new("code-review", "eng", "code", "gpt-4.1", Anthropic: false, Stream: true, Tools: false, CachedPrefix: true, Weight: 15),
        new("agent", "eng", "agent", "gpt-4o", Anthropic: false, Stream: false, Tools: true, CachedPrefix: false, Weight: 13),
        new("experiments", "research", "eval", "gpt-9-preview", Anthropic: false, Stream: false, Tools: false, CachedPrefix: false, Weight: 2),
    ];

    private static readonly string Policy = string.Join(" ", Enumerable.Range(1, 260).Select(i => $"Policy {i}: answer politely, cite the order number, never promise refunds above the limit."));

    private static async Task<int> RunAsync(ParseResult pr, int total, int concurrency, CancellationToken ct)
    {
        var app = GatewayHost.Build(CliOptions.HostArgs(pr, "http://127.0.0.1:0"), b => b.Logging.SetMinimumLevel(LogLevel.Error));
        await app.StartAsync(ct);
        var url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var store = app.Services.GetRequiredService<SqliteStore>();
        var before = await store.CountAsync(ct);
        Console.WriteLine($"Bursar demo: gateway on {url}, providers simulated, ledger in {store.Path}");

        // a small monthly budget on one customer, so the demo shows a refusal as well
        await store.UpsertBudgetAsync(new Bursar.Core.Budgets.BudgetDefinition
        {
            Id = "demo-customer-e", Scope = Bursar.Core.Budgets.BudgetScope.Customer, Value = "customer-e", Period = Bursar.Core.Budgets.BudgetPeriod.Month, LimitUsd = 0.02m,
        }, ct);
        await app.Services.GetRequiredService<Bursar.Core.Budgets.BudgetManager>().ReloadAsync(ct);
        var keys = new Dictionary<string, string>();
        foreach (var team in Mix.Select(m => m.Team).Distinct())
        {
            var (key, secret) = KeyFactory.Create(TimeProvider.System, name: "demo " + team, team: team);
            await store.AddAsync(key, ct);
            keys[team] = secret;
        }

        using var http = new HttpClient { BaseAddress = new Uri(url) };
        var schedule = Enumerable.Range(0, total).Select(i => Pick(i)).ToArray();
        var done = 0;
        var failed = 0;
        var sw = Stopwatch.StartNew();
        var progress = new Lock();
        await Parallel.ForEachAsync(Enumerable.Range(0, total), new ParallelOptions { MaxDegreeOfParallelism = concurrency, CancellationToken = ct }, async (i, token) =>
        {
            var w = schedule[i];
            using var req = Build(w, i, keys[w.Team]);
            using var resp = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, token);
            await resp.Content.ReadAsStringAsync(token);
            var n = Interlocked.Increment(ref done);
            if (!resp.IsSuccessStatusCode) Interlocked.Increment(ref failed);
            var step = Math.Max(1, total / (Console.IsOutputRedirected ? 10 : 100));
            if (n % step == 0 || n == total)
            {
                lock (progress)
                {
                    var bar = new string('#', n * 30 / total).PadRight(30, '.');
                    var line = $"  [{bar}] {n}/{total} calls  {n / Math.Max(0.001, sw.Elapsed.TotalSeconds):F0}/s  {failed} failed ";
                    if (Console.IsOutputRedirected) Console.WriteLine(line); else Console.Write("\r" + line);
                }
            }
        });
        Console.WriteLine();
        await app.StopAsync(ct); // drains the ledger queue into SQLite
        await app.DisposeAsync();

        var records = (await store.ReadAsync(new LedgerQuery { Limit = int.MaxValue }, ct)).Skip((int)before).ToArray();
        Console.WriteLine($"\n{records.Length} calls metered into the ledger.\n");
        Console.WriteLine(SpendReport.Build(records, ReportDimension.Feature).ToTable());
        Console.WriteLine(SpendReport.Build(records, ReportDimension.Model).ToTable());
        var reads = records.Sum(r => r.CacheReadTokens);
        Console.WriteLine($"Prompt-cache reads: {reads:N0} tokens across {records.Count(r => r.CacheReadTokens > 0)} calls.");
        Console.WriteLine("Savings Bursar credited (each lever only what it can show):");
        Console.WriteLine($"  response cache  {SpendReport.Money(records.Sum(r => r.SavingResponseCache)),12}  ({records.Count(r => r.SavingResponseCache > 0)} calls answered without a provider call)");
        Console.WriteLine($"  prompt caching  {SpendReport.Money(records.Sum(r => r.SavingPromptCache)),12}  (breakpoints Bursar placed: read discount minus write premium)");
        var refused = records.Where(r => r.Outcome == "refused").ToArray();
        if (refused.Length > 0) Console.WriteLine($"Refused before any spend: {refused.Length} calls ({string.Join(", ", refused.GroupBy(r => r.ErrorType).Select(g => $"{g.Count()} {g.Key}"))}), e.g. customer-e's $0.02 monthly budget.");
        Console.WriteLine($"Explore further: bursar report --by team | --by customer | --by day | --format csv   (--data-dir {pr.GetValue(CliOptions.DataDir)})");
        return 0;
    }

    private static Workload Pick(int i)
    {
        var slot = (int)((uint)(i * 2654435761) % 100);
        foreach (var w in Mix)
        {
            if (slot < w.Weight) return w;
            slot -= w.Weight;
        }
        return Mix[0];
    }

    private static HttpRequestMessage Build(Workload w, int i, string key)
    {
        var question = w.Task == "classification"
            ? $"Classify ticket #{i % 10}: my order has not arrived and the tracking page shows no update." // tickets repeat
            : $"Request {i % 40}: please help with item {i % 17} for the {w.Feature} flow.";
        JsonObject body;
        string path;
        if (w.Anthropic)
        {
            path = "/v1/messages";
            var system = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = w.CachedPrefix ? Policy : "You summarize documents." });
            // no cache_control from the caller: Bursar places the breakpoint on the long, stable policy prefix
            body = new JsonObject
            {
                ["model"] = w.Model,
                ["max_tokens"] = 400,
                ["system"] = system,
                ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question }),
                ["stream"] = w.Stream,
            };
        }
        else
        {
            path = "/v1/chat/completions";
            var messages = new JsonArray(
                new JsonObject { ["role"] = "system", ["content"] = w.CachedPrefix ? Policy : "Be brief." },
                new JsonObject { ["role"] = "user", ["content"] = question });
            body = new JsonObject { ["model"] = w.Model, ["messages"] = messages, ["max_completion_tokens"] = 300, ["stream"] = w.Stream };
            if (w.Task == "classification") body["temperature"] = 0; // deterministic: repeated tickets come from the exact cache
            if (w.Tools)
            {
                body["tools"] = new JsonArray(new JsonObject
                {
                    ["type"] = "function",
                    ["function"] = new JsonObject
                    {
                        ["name"] = "lookup_order",
                        ["parameters"] = new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["order_id"] = new JsonObject { ["type"] = "string" } }, ["required"] = new JsonArray("order_id") },
                    },
                });
            }
        }
        var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        req.Headers.Add("x-bursar-feature", w.Feature);
        req.Headers.Add("x-bursar-task", w.Task);
        req.Headers.Add("x-bursar-customer", "customer-" + (char)('a' + i % 5));
        if (w.Tools) req.Headers.Add("x-bursar-run", "run-" + i / 3);
        return req;
    }
}
