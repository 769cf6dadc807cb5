using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Bursar.Gateway.Tests;

/// <summary>A gateway whose routes turn the context lever on: compaction for one feature, document compression for another.</summary>
public sealed class ContextGatewayFixture : GatewayFixture
{
    protected override IEnumerable<string> ExtraArgs =>
    [
        "--Bursar:Routing:Routes:0:Name=agent-compaction", "--Bursar:Routing:Routes:0:Feature=ctx-agent",
        "--Bursar:Routing:Routes:0:Compaction:Strategy=prune-tool-results", "--Bursar:Routing:Routes:0:Compaction:KeepTurns=2",
        "--Bursar:Routing:Routes:0:Compaction:TriggerTokens=0", "--Bursar:Routing:Routes:0:Compaction:CacheAware=false",
        "--Bursar:Routing:Routes:1:Name=docs", "--Bursar:Routing:Routes:1:Feature=ctx-docs", "--Bursar:Routing:Routes:1:DocumentCompression=true",
        "--Bursar:Routing:Routes:2:Name=native", "--Bursar:Routing:Routes:2:Feature=ctx-native",
        "--Bursar:Routing:Routes:2:Compaction:Strategy=sliding-window", "--Bursar:Routing:Routes:2:Compaction:KeepTurns=1", "--Bursar:Routing:Routes:2:Compaction:TriggerTokens=0",
        "--Bursar:Routing:Routes:3:Name=summaries", "--Bursar:Routing:Routes:3:Feature=ctx-summary", "--Bursar:Routing:Routes:3:Compaction:Strategy=summarize",
        "--Bursar:Routing:Routes:3:Compaction:KeepTurns=2", "--Bursar:Routing:Routes:3:Compaction:SummaryEvery=2", "--Bursar:Routing:Routes:3:Compaction:TriggerTokens=0",
        "--Bursar:Routing:Routes:3:Compaction:CacheAware=false",
        "--Bursar:Routing:Routes:4:Name=window", "--Bursar:Routing:Routes:4:Feature=ctx-window", "--Bursar:Routing:Routes:4:Compaction:Strategy=sliding-window",
        "--Bursar:Routing:Routes:5:Name=prune", "--Bursar:Routing:Routes:5:Feature=ctx-prune", "--Bursar:Routing:Routes:5:Compaction:Strategy=prune-tool-results",
        "--Bursar:Routing:Routes:6:Name=window-a", "--Bursar:Routing:Routes:6:Feature=ctx-window-a", "--Bursar:Routing:Routes:6:Compaction:Strategy=sliding-window",
        "--Bursar:Runs:MaxTurns=1000", "--Bursar:Runs:MaxToolCalls=1000", "--Bursar:Runs:DoneWhenAnsweredWithoutTools=false", // replayed agent conversations run long and answer between tool calls
        "--Bursar:Routing:Routes:7:Name=window-b", "--Bursar:Routing:Routes:7:Feature=ctx-window-b", "--Bursar:Routing:Routes:7:Compaction:Strategy=sliding-window",
        "--Bursar:Routing:Routes:8:Name=window-a2", "--Bursar:Routing:Routes:8:Feature=ctx-window-a2", "--Bursar:Routing:Routes:8:Compaction:Strategy=sliding-window",
        "--Bursar:Routing:Routes:9:Name=window-b2", "--Bursar:Routing:Routes:9:Feature=ctx-window-b2", "--Bursar:Routing:Routes:9:Compaction:Strategy=sliding-window",
    ];
}

/// <summary>The context lever end to end: the gateway's edit reaches the Simulator, the ledger row says what it removed; provider-native context management passes through and bills its iterations.</summary>
public sealed class ContextGatewayTests(ContextGatewayFixture gw, ITestOutputHelper output) : IClassFixture<ContextGatewayFixture>
{
    private static string Conversation(int turns)
    {
        var messages = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = "You are a booking agent." });
        for (var i = 0; i < turns; i++)
        {
            messages.Add(new JsonObject { ["role"] = "user", ["content"] = $"Bitte prüfe Buchung {i}." });
            if (i == turns - 1) break;
            messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = null, ["tool_calls"] = new JsonArray(new JsonObject { ["id"] = $"call_{i}", ["type"] = "function", ["function"] = new JsonObject { ["name"] = "lookup", ["arguments"] = $"{{\"id\":\"B{i}\"}}" } }) });
            messages.Add(new JsonObject { ["role"] = "tool", ["tool_call_id"] = $"call_{i}", ["content"] = $"{{\"booking\":\"B{i}X7\",\"notes\":\"{string.Join(' ', Enumerable.Repeat("paid in full with the card on file", 30))}\"}}" });
            messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = $"Booking B{i}X7 is confirmed." });
        }
        return new JsonObject { ["model"] = "gpt-4o-mini", ["messages"] = messages, ["temperature"] = 0.7 }.ToJsonString();
    }

    private async Task<JsonNode> Send(string json, string feature, string path = "/v1/chat/completions", string? beta = null)
    {
        using var req = gw.Post(path, json, feature: feature);
        if (beta is not null)
        {
            req.Headers.Add("anthropic-version", "2023-06-01");
            req.Headers.Add("anthropic-beta", beta);
        }
        using var resp = await gw.Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        Assert.True(resp.StatusCode == HttpStatusCode.OK, text);
        return JsonNode.Parse(text)!;
    }

    /// <summary>
    /// The saving a ledger row credits (tokens removed at the rate they would have billed, the cache-read rate when cached, less the cache
    /// written again) summed over recorded agent conversations (tau-bench airline, call by call) is close to the cost actually saved: the
    /// same calls replayed without compaction on an empty provider cache, against with it on an empty cache.
    /// </summary>
    private static IReadOnlyList<Bursar.Core.Context.Trajectory> TauBench() => Bursar.Core.Context.CompactionEvaluation.Load(Path.Combine(ContextData(), "tau_bench_airline_gpt4o.json"));

    private static string ContextData()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Bursar.slnx"))) dir = dir.Parent;
        return Path.Combine(dir!.FullName, "..", "shared", "data", "context");
    }

    /// <summary>Each conversation replayed call by call (gpt-4o, the tau-bench tools) under <paramref name="feature"/>, on an empty provider cache; the ledger's rows.</summary>
    private async Task<IReadOnlyList<Bursar.Core.Ledger.LedgerRecord>> Replay(IReadOnlyList<Bursar.Core.Context.Trajectory> conversations, string feature)
    {
        var tools = Bursar.Core.Context.CompactionEvaluation.LoadTools(Path.Combine(ContextData(), "tau_bench_airline_tools.json"));
        gw.Simulator.Cache.Clear();
        foreach (var t in conversations)
            foreach (var end in t.CallPoints())
            {
                // the Simulator answers as the recorded agent did: the tool it called, or text where it answered the user (so the ledger's
                // finish reasons say, as a real agent's do, whether the next call carries tool results or a new user message)
                var request = t.Request(end, tools, "gpt-4o");
                request["tool_choice"] = t.Messages[end]?["tool_calls"] is JsonArray { Count: > 0 } called
                    ? new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = called[0]!["function"]!["name"]!.DeepClone() } }
                    : "none";
                // the response cache off: a second replay must reach the provider as the first did
                using var req = gw.Post("/v1/chat/completions", request.ToJsonString(), feature: feature);
                req.Headers.Add("x-bursar-cache", "off");
                req.Headers.Add("x-bursar-run", $"{feature}-{t.Id}"); // one agent run per conversation, as an agent framework tags it
                using var resp = await gw.Http.SendAsync(req);
                Assert.True(resp.StatusCode == HttpStatusCode.OK, await resp.Content.ReadAsStringAsync());
            }
        return await gw.LedgerAsync(feature, conversations.Sum(t => t.CallPoints().Count()));
    }

    /// <summary>
    /// The what-if ladder's tighter-context step with route policies: the ledger holds 40 conversations already on a sliding-window route
    /// and 40 others not compacted, each conversation one agent run (<c>x-bursar-run</c>). Told a route would compact the second set, the
    /// ladder replays each of its runs through the stage's cache-aware step decision on the run's token series and re-prices the calls:
    /// within 10% of the saving measured by replaying the second set with compaction on, on both splits (a flat share measured on the
    /// first set misses by 30% and 80%). Without run ids it applies the share of cost the first set's rows measured (their credited
    /// saving over what they would have cost), or the share it is given. The report shows the lever per route.
    /// </summary>
    [Theory]
    [InlineData("halves")]
    [InlineData("alternate")]
    public async Task The_tighter_context_step_replays_each_run_through_the_compaction_step_and_lands_within_10_percent_of_the_measured_saving(string split)
    {
        var all = TauBench().Take(80).ToArray();
        var (first, second) = split == "halves"
            ? (all.Take(40).ToArray(), all.Skip(40).ToArray())
            : (all.Where((_, k) => k % 2 == 0).ToArray(), all.Where((_, k) => k % 2 == 1).ToArray());
        var suffix = split == "halves" ? "" : "2";
        var calibration = await Replay(first, "ctx-window-a" + suffix);
        var off = await Replay(second, "ctx-whatif" + suffix);
        var on = await Replay(second, "ctx-window-b" + suffix); // the second set with compaction on: what the step should predict
        var routes = new Bursar.Core.Routing.RoutingOptions
        {
            Routes =
            [
                new() { Name = "window-a" + suffix, Feature = "ctx-window-a" + suffix, Compaction = new() { Strategy = Bursar.Core.Context.CompactionPolicy.SlidingWindow } },
                new() { Name = "window-b" + suffix, Feature = "ctx-whatif" + suffix, Compaction = new() { Strategy = Bursar.Core.Context.CompactionPolicy.SlidingWindow } },
            ],
        };
        var catalog = new Bursar.Core.Pricing.PriceCatalog(Bursar.Core.Pricing.PriceFiles.LoadBuiltIn());
        var i = Array.IndexOf(Bursar.Core.Advisor.WhatIfSimulator.Order, "tighter context");
        (decimal Saving, decimal Before, string Assumption) Step(IReadOnlyList<Bursar.Core.Ledger.LedgerRecord> window, Bursar.Core.Advisor.WhatIfAssumptions a)
        {
            var ladder = Bursar.Core.Advisor.WhatIfSimulator.Run(window, catalog, a, window.Min(r => r.Timestamp), window.Max(r => r.Timestamp).AddSeconds(1));
            return (ladder.Steps[i - 1].WindowCost - ladder.Steps[i].WindowCost, ladder.Steps[i - 1].WindowCost, ladder.Steps[i].Assumption);
        }

        // per run: each conversation of the second set replayed through the compaction step's decision on its tokens
        var window = calibration.Concat(off).ToArray();
        var (predicted, _, text) = Step(window, new() { Routes = routes });
        var measured = off.Sum(r => r.Cost!.Value) - on.Sum(r => r.Cost!.Value);
        var credited = on.Sum(r => r.SavingCompaction);
        var noRuns = calibration.Concat(off.Select(r => r with { RunId = null })).ToArray();
        var offCost = Step(noRuns, new() { Routes = routes }).Before - Step(calibration, new() { Routes = routes }).Before; // the second set's cost after the earlier steps (output caps, prompt caching)
        // measured on the ledger: the compacted calls' credited saving over their cost without it
        var share = calibration.Sum(r => r.SavingCompaction) / calibration.Sum(r => r.Cost!.Value + r.SavingCompaction);
        Assert.True(share > 0, $"the calibration set's compaction saved nothing: {share}");
        output.WriteLine($"split {split}: calibration share {share:P2} ({calibration.Sum(r => r.SavingCompaction):F4} of {calibration.Sum(r => r.Cost!.Value + r.SavingCompaction):F2}); "
            + $"second set cost {offCost:F4}: predicted per run {predicted:F4}, flat share {share * offCost:F4}, measured {measured:F4}, credited {credited:F4}; "
            + $"predicted vs measured {(predicted - measured) / measured:P1}; {text}");
        Assert.True(measured > 0);
        Assert.True(Math.Abs(predicted - measured) <= 0.10m * measured, $"predicted {predicted:F4} vs measured {measured:F4} ({(predicted - measured) / measured:P1})");
        Assert.Contains($"{off.Count:N0} calls compacted with sliding-window", text);
        Assert.Contains($"simulated per run on {second.Length:N0} runs", text);

        // without run ids: the share measured on the ledger's calls already compacted, applied to the others' cost
        var (flat, _, flatText) = Step(noRuns, new() { Routes = routes });
        Assert.Equal(Math.Round(share * offCost, 6), Math.Round(flat, 6));
        Assert.Contains($"{off.Count:N0} calls compacted with sliding-window", flatText);
        Assert.Contains($"measured on {calibration.Count:N0} ledger calls already on such a route", flatText);
        // a share measured elsewhere (`bursar eval compaction` on the team's own conversations) replaces the ledger's, and the per-run replay
        var (given, _, givenText) = Step(window, new() { Routes = routes, ContextReductions = new Dictionary<string, decimal> { ["sliding-window"] = 0.05m } });
        Assert.Equal(Math.Round(0.05m * offCost, 6), Math.Round(given, 6));
        Assert.Contains("5.0% of their cost (given)", givenText);
        // the calls already compacted are in the baseline: a ladder over them alone has nothing left to trim
        var onlyOn = Bursar.Core.Advisor.WhatIfSimulator.Run(calibration, catalog, new() { Routes = routes }, calibration.Min(r => r.Timestamp), calibration.Max(r => r.Timestamp).AddSeconds(1));
        Assert.Equal(onlyOn.Steps[i - 1].WindowCost, onlyOn.Steps[i].WindowCost);

        // the report: the lever per route, calls shortened, tokens removed, the saving
        var report = Bursar.Core.Reporting.SpendReport.Build(window, Bursar.Core.Reporting.ReportDimension.Route);
        var row = Assert.Single(report.Rows, r => r.Group == "window-a" + suffix);
        Assert.True(row.ContextCalls > 0);
        Assert.Equal(calibration.Count(r => r.ContextTokensRemoved > 0), row.ContextCalls);
        Assert.Equal(calibration.Sum(r => r.ContextTokensRemoved), row.ContextTokensRemoved);
        Assert.Equal(calibration.Sum(r => r.SavingCompaction), row.SavingContext);
        Assert.Equal(0, report.Rows.Single(r => r.Group != "window-a" + suffix).ContextCalls);
        Assert.Contains("Context lever per route", report.ToTable());
        Assert.Contains("\"context_tokens_removed\": " + row.ContextTokensRemoved, report.ToJson());
    }

    [Theory]
    [InlineData("ctx-window")]
    [InlineData("ctx-prune")]
    public async Task The_credited_compaction_saving_is_close_to_the_measured_change_in_cost(string feature)
    {
        var conversations = TauBench().Take(30).ToArray();
        var calls = conversations.Sum(t => t.CallPoints().Count());
        var plain = await Replay(conversations, feature + "-off");
        var compacted = await Replay(conversations, feature);
        var measured = plain.Sum(r => r.Cost!.Value) - compacted.Sum(r => r.Cost!.Value);
        var credited = compacted.Sum(r => r.SavingCompaction);
        Assert.True(compacted.Sum(r => r.ContextTokensRemoved) > 0);
        Assert.True(Math.Abs(credited - measured) <= Math.Max(0.25m * Math.Abs(measured), 0.005m), $"credited {credited:F4} vs measured {measured:F4} over {calls} calls");
    }

    [Fact]
    public async Task A_compacted_call_sends_fewer_input_tokens_and_its_ledger_row_says_how_many_and_why()
    {
        var json = Conversation(6);
        var plain = await Send(json, "ctx-plain");
        var compacted = await Send(json, "ctx-agent");
        var saved = plain["usage"]!["prompt_tokens"]!.GetValue<long>() - compacted["usage"]!["prompt_tokens"]!.GetValue<long>();
        Assert.True(saved > 300, $"the Simulator read {saved} fewer tokens");
        var row = (await gw.LedgerAsync("ctx-agent")).Single();
        Assert.Equal(("agent-compaction", "prune-tool-results"), (row.Route, row.ContextStrategy));
        Assert.InRange(row.ContextTokensRemoved, saved - 20, saved + 20); // Bursar's count and the provider's agree
        Assert.True(row.SavingCompaction > 0);
        Assert.Equal(0, (await gw.LedgerAsync("ctx-plain")).Single().ContextTokensRemoved);
    }

    [Fact]
    public async Task A_summarization_checkpoint_bills_its_summary_call_on_its_own_ledger_row_once()
    {
        var first = await Send(Conversation(6), "ctx-summary");
        var again = await Send(Conversation(7), "ctx-summary"); // the same checkpoint (4 turns): the stored summary, no second summary call
        var rows = await gw.LedgerAsync("ctx-summary", 3);
        await Task.Delay(200);
        rows = await gw.LedgerAsync("ctx-summary", 3);
        var summaries = rows.Where(r => r.Task == "compaction-summary").ToArray();
        var summary = Assert.Single(summaries);
        Assert.Equal("summaries", summary.Route);
        Assert.True(summary.Cost > 0 && summary.OutputTokens > 0);
        var calls = rows.Where(r => r.Task != "compaction-summary").ToArray();
        Assert.Equal(2, calls.Length);
        Assert.All(calls, c => Assert.Equal(("summarize", "summaries"), (c.ContextStrategy, c.Route)));
        Assert.All(calls, c => Assert.True(c.ContextTokensRemoved > 0));
        Assert.True(first["usage"]!["prompt_tokens"]!.GetValue<long>() < (await Send(Conversation(6), "ctx-summary-plain"))["usage"]!["prompt_tokens"]!.GetValue<long>());
        Assert.NotNull(again);
    }

    [Fact]
    public async Task A_conversation_within_the_kept_turns_goes_through_as_it_came()
    {
        var json = Conversation(2);
        var plain = await Send(json, "ctx-plain-short");
        var routed = await Send(json, "ctx-agent-short");
        Assert.Equal(plain["usage"]!["prompt_tokens"]!.GetValue<long>(), routed["usage"]!["prompt_tokens"]!.GetValue<long>());
    }

    [Fact]
    public async Task Html_documents_on_a_compressing_route_reach_the_provider_as_text()
    {
        var page = "<html><body><nav>Home | Products | Careers</nav><article><h1>Release notes</h1><p>Version 2 adds   offline mode.</p>"
            + string.Concat(Enumerable.Range(0, 40).Select(i => $"<p class=\"x\" style=\"color:red\">Fix {i}: a crash when syncing.</p>")) + "</article><script>track();</script></body></html>";
        var json = new JsonObject { ["model"] = "gpt-4o-mini", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Summarise:\n" + page }) }.ToJsonString();
        var plain = await Send(json, "ctx-docs-plain");
        var compressed = await Send(json, "ctx-docs");
        Assert.True(compressed["usage"]!["prompt_tokens"]!.GetValue<long>() < plain["usage"]!["prompt_tokens"]!.GetValue<long>() * 0.7);
        var row = (await gw.LedgerAsync("ctx-docs")).Single();
        Assert.Equal("compress", row.ContextStrategy);
        Assert.True(row.ContextTokensRemoved > 0);
    }

    [Fact]
    public async Task Anthropic_context_management_passes_through_and_the_ledger_bills_every_iteration()
    {
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Lies alle Berichte." });
        for (var i = 0; i < 12; i++)
        {
            messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_use", ["id"] = $"toolu_{i}", ["name"] = "read", ["input"] = new JsonObject { ["n"] = i } }) });
            messages.Add(new JsonObject { ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = $"toolu_{i}", ["content"] = string.Join(' ', Enumerable.Range(0, 1300).Select(k => $"report {i} line {k} ok")) }) });
        }
        var body = new JsonObject
        {
            ["model"] = "claude-sonnet-4-5", ["max_tokens"] = 100, ["messages"] = messages,
            ["context_management"] = new JsonObject { ["edits"] = new JsonArray(new JsonObject { ["type"] = "compact_20260112", ["trigger"] = new JsonObject { ["type"] = "input_tokens", ["value"] = 50_000 } }) },
        };
        // the compacting route is on too: Bursar leaves a request that carries the provider's own context management as it is
        var answer = await Send(body.ToJsonString(), "ctx-native", "/v1/messages", beta: "compact-2026-01-12");
        Assert.Equal("compaction", answer["content"]![0]!["type"]!.GetValue<string>());
        var iterations = answer["usage"]!["iterations"]!.AsArray();
        var row = (await gw.LedgerAsync("ctx-native")).Single();
        Assert.Equal(iterations.Sum(i => i!["input_tokens"]!.GetValue<long>() + i["cache_read_input_tokens"]!.GetValue<long>() + i["cache_creation_input_tokens"]!.GetValue<long>()), row.Usage.TotalInputTokens);
        Assert.True(row.Usage.TotalInputTokens > 50_000 + answer["usage"]!["input_tokens"]!.GetValue<long>(), "the compaction iteration is billed, not only the top level");
        Assert.Equal(iterations.Sum(i => i!["output_tokens"]!.GetValue<long>()), row.OutputTokens);
        Assert.Null(row.ContextStrategy);
    }
}
