using System.CommandLine;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using Bursar.Core.Context;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Tokens;
using Bursar.Gateway.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Bursar.Cli.Commands;

/// <summary>
/// <c>bursar eval compaction</c>: recorded agent conversations replayed call by call through the gateway and the Simulator (with its
/// prompt caching), once per compaction strategy on a fresh gateway each (no strategy reads another's cache), against no compaction:
/// input tokens per call, cost from the ledger, and the fidelity proxy.
/// </summary>
internal static class EvalCompactionCommand
{
    /// <summary>A strategy as the command names it: <c>none</c>, <c>prune-tool-results</c>, <c>sliding-window</c>, with <c>:eager</c> for no cache awareness.</summary>
    private sealed record Variant(string Label, CompactionPolicy? Policy);

    public static Command Create()
    {
        var trajectories = new Option<string>("--trajectories") { Description = "tau-bench trajectories (JSON array of {traj, info.task.actions})", DefaultValueFactory = _ => "../shared/data/context/tau_bench_airline_gpt4o.json" };
        var tools = new Option<string>("--tools") { Description = "Their tool definitions (OpenAI function schema)", DefaultValueFactory = _ => "../shared/data/context/tau_bench_airline_tools.json" };
        var model = new Option<string>("--model") { Description = "The model the calls ask for (a Claude model goes through translation to the Anthropic Simulator)", DefaultValueFactory = _ => "gpt-4o" };
        var strategies = new Option<string>("--strategies") { Description = "Comma list: none, prune-tool-results, sliding-window, summarize; ':eager' compacts on every call (no cache awareness)", DefaultValueFactory = _ => "none,prune-tool-results,prune-tool-results:eager,sliding-window,sliding-window:eager,summarize,summarize:eager,retrieval,retrieval:eager" };
        var retrieve = new Option<int>("--retrieve-turns") { Description = "Retrieval: older turns kept for their relevance (RetrieveTurns)", DefaultValueFactory = _ => new CompactionPolicy().RetrieveTurns };
        var generator = new Option<string>("--generator") { Description = "Retrieval's encoder, as Bursar:SemanticCache:Generator (local, auto, minilm, onnx, openai)", DefaultValueFactory = _ => "local" };
        var keep = new Option<int>("--keep-turns") { Description = "Turns kept verbatim (KeepTurns)", DefaultValueFactory = _ => new CompactionPolicy().KeepTurns };
        var limit = new Option<int>("--limit") { Description = "Only the first N conversations (0: all)", DefaultValueFactory = _ => 0 };
        var command = new Command("compaction", "Context compaction on recorded agent conversations: input tokens per call and cost per strategy through the gateway and Simulator, and the share of ground-truth action arguments still in context")
            { trajectories, tools, model, strategies, keep, limit, retrieve, generator };
        command.SetAction(async (pr, ct) =>
        {
            foreach (var file in new[] { pr.GetValue(trajectories)!, pr.GetValue(tools)! })
                if (!File.Exists(file)) { Console.Error.WriteLine($"No such file: {file}"); return 2; }
            var all = CompactionEvaluation.Load(pr.GetValue(trajectories)!);
            var n = pr.GetValue(limit);
            var convs = n > 0 ? all.Take(n).ToArray() : all.ToArray();
            var toolDefs = CompactionEvaluation.LoadTools(pr.GetValue(tools)!);
            var variants = new List<Variant>();
            foreach (var s in pr.GetValue(strategies)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (s == "none") { variants.Add(new Variant("none", null)); continue; }
                var parts = s.Split(':');
                var policy = new CompactionPolicy { Strategy = parts[0], KeepTurns = pr.GetValue(keep), RetrieveTurns = pr.GetValue(retrieve), CacheAware = !(parts.Length > 1 && parts[1] == "eager") };
                try { policy.Validate("--strategies", s); }
                catch (InvalidOperationException e) { Console.Error.WriteLine(e.Message); return 2; }
                variants.Add(new Variant(s, policy));
            }
            var m = pr.GetValue(model)!;
            var calls = convs.Sum(t => t.CallPoints().Count());
            Console.WriteLine($"{convs.Length} conversations, {calls:N0} calls each replayed through the gateway and the Simulator, model {m}, {variants.Count} strategies (KeepTurns {pr.GetValue(keep)})");
            var rows = new List<(Variant V, IReadOnlyList<LedgerRecord> Records, int Failed, FidelityResult? Fidelity, TimeSpan Took)>();
            var compactor = new Compactor(TokenCounter.Default);
            // fidelity is read on the OpenAI-format requests, with the served model's cache rates (what the boundary weighs)
            var anthropic = TokenCounter.IsClaude(m);
            var rates = CacheRates.Of(new Bursar.Core.Pricing.PriceCatalog(Bursar.Core.Pricing.PriceFiles.LoadBuiltIn()).Find(m).Price?.Rates, anthropic);
            foreach (var v in variants)
            {
                var started = System.Diagnostics.Stopwatch.GetTimestamp();
                var (records, failed, fidelity) = await ReplayAsync(pr, v, convs, toolDefs, m, calls, pr.GetValue(generator)!,
                    async (embeddings, token) => v.Policy is null or { Strategy: CompactionPolicy.Summarize } ? null
                        : await CompactionEvaluation.FidelityAsync(convs, toolDefs, v.Policy, compactor, m, rates, embeddings, token), ct);
                rows.Add((v, records, failed, fidelity, System.Diagnostics.Stopwatch.GetElapsedTime(started)));
            }
            var baseline = rows.FirstOrDefault(r => r.V.Policy is null);
            Console.WriteLine();
            Console.WriteLine($"{"strategy",-26} {"calls",6} {"input/call",11} {"vs none",8} {"cached",7} {"removed/call",13} {"cost $",10} {"vs none",8} {"saving $",9} {"fidelity",9}");
            foreach (var (v, all_, failed, fidelity, _) in rows)
            {
                // the summary calls of summarization checkpoints have rows of their own: in the cost, not in the per-call input
                var records = all_.Where(r => r.Task != SummaryCall.Task).ToArray();
                var summaryCalls = all_.Count - records.Length;
                var input = records.Sum(r => r.Usage.TotalInputTokens);
                var perCall = records.Length == 0 ? 0 : (double)input / records.Length;
                var cached = input == 0 ? 0 : (double)records.Sum(r => r.CacheReadTokens) / input;
                var cost = all_.Sum(r => r.Cost ?? 0m);
                var baseInput = baseline.Records?.Where(r => r.Task != SummaryCall.Task).Sum(r => r.Usage.TotalInputTokens) ?? 0;
                var baseCost = baseline.Records?.Sum(r => r.Cost ?? 0m) ?? 0m;
                string Delta(double x, double b) => b == 0 ? "-" : (x / b - 1).ToString("+0.0%;-0.0%;0.0%", CultureInfo.InvariantCulture);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{v.Label,-26} {records.Length,6:N0} {perCall,11:N0} {Delta(input, baseInput),8} {cached,7:P0} {(records.Length == 0 ? 0 : (double)records.Sum(r => r.ContextTokensRemoved) / records.Length),13:N0} {cost,10:F4} {Delta((double)cost, (double)baseCost),8} {all_.Sum(r => r.SavingCompaction),9:F4} {(fidelity is not null ? fidelity.Retained.ToString("P1", CultureInfo.InvariantCulture) : v.Policy is null ? "100%" : "n/a"),9}"));
                if (summaryCalls > 0) Console.WriteLine($"  {summaryCalls:N0} summary calls (task {SummaryCall.Task}, the Simulator's stand-in text: fidelity not measured), their cost included");
                if (failed > 0) Console.WriteLine($"  {failed} calls failed");
            }
            if (rows.FirstOrDefault(r => r.Fidelity is not null).Fidelity is { } f)
                Console.WriteLine($"\nFidelity proxy: {f.ActionsTaken} of {f.Actions} ground-truth actions were taken by the agent; {f.ValuesSeen:N0} of their argument values appeared earlier in the conversation (outside the system prompt). Fidelity is the share still in the compacted context of that call.");
            Console.WriteLine("Cost: the ledger's own rows (the Simulator's usage with its prompt caching, priced by the catalog); 'saving $' is the ledger's SavingCompaction (the summary calls' rows included: their cost counts against it).");
            var def = new CompactionPolicy();
            Console.WriteLine($"Default strategy: {def.Strategy} (KeepTurns {def.KeepTurns}, cache-aware); target fidelity >= 95%.");
            return 0;
        });
        return command;
    }

    /// <summary>One strategy on a fresh gateway: every call of every conversation in order, one at a time; the ledger's rows after it drained.</summary>
    /// <param name="fidelity">Reads the fidelity with the gateway's own retrieval encoder (resolved as the semantic cache's).</param>
    private static async Task<(IReadOnlyList<LedgerRecord> Records, int Failed, FidelityResult? Fidelity)> ReplayAsync(ParseResult pr, Variant v, Trajectory[] convs, System.Text.Json.Nodes.JsonArray tools, string model, int calls,
        string generator, Func<TurnEmbeddings, CancellationToken, Task<FidelityResult?>> fidelity, CancellationToken ct)
    {
        var dir = Path.Combine(Path.GetTempPath(), "bursar-eval-compaction-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            var extra = new List<string> { $"--Bursar:SemanticCache:Generator={generator}" };
            if (v.Policy is { } p)
            {
                const string r = "--Bursar:Routing:Routes:0:";
                extra.AddRange([$"{r}Name=eval", $"{r}Feature=eval", $"{r}Compaction:Strategy={p.Strategy}", $"{r}Compaction:KeepTurns={p.KeepTurns}",
                    $"{r}Compaction:CacheAware={p.CacheAware}", $"{r}Compaction:TriggerTokens={p.TriggerTokens}", $"{r}Compaction:RetrieveTurns={p.RetrieveTurns}"]);
            }
            var app = GatewayHost.Build(CliOptions.HostArgs(pr, "http://127.0.0.1:0", extra, dir), b => CliOptions.QuietHost(b, LogLevel.Error));
            await app.StartAsync(ct);
            int failed = 0, done = 0;
            FidelityResult? measured = null;
            try
            {
                var store = app.Services.GetRequiredService<Bursar.Core.Storage.IBursarStore>();
                var (key, secret) = KeyFactory.Create(TimeProvider.System, name: "eval " + v.Label, feature: "eval");
                await store.AddAsync(key, ct);
                var url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
                using var http = new HttpClient { BaseAddress = new Uri(url) };
                foreach (var t in convs)
                {
                    foreach (var end in t.CallPoints())
                    {
                        using var req = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
                        {
                            Content = new StringContent(t.Request(end, tools, model).ToJsonString(), Encoding.UTF8, "application/json"),
                        };
                        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", secret);
                        using var resp = await http.SendAsync(req, ct);
                        if (!resp.IsSuccessStatusCode) failed++;
                        if (++done % 50 == 0 || done == calls) Console.Error.Write($"\r  {v.Label}: {done:N0}/{calls:N0} calls");
                    }
                }
                Console.Error.WriteLine();
                measured = await fidelity(app.Services.GetRequiredService<TurnEmbeddings>(), ct);
            }
            finally
            {
                await app.StopAsync(CancellationToken.None); // drains the ledger
            }
            var records = await app.Services.GetRequiredService<Bursar.Core.Storage.IBursarStore>().ReadAsync(new LedgerQuery { Limit = int.MaxValue }, CancellationToken.None);
            await app.DisposeAsync();
            return (records, failed, measured);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }
}
