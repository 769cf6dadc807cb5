using System.Net;
using System.Text;
using System.Text.Json.Nodes;

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
    ];
}

/// <summary>The context lever end to end: the gateway's edit reaches the Simulator, the ledger row says what it removed; provider-native context management passes through and bills its iterations.</summary>
public sealed class ContextGatewayTests(ContextGatewayFixture gw) : IClassFixture<ContextGatewayFixture>
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
    [Theory]
    [InlineData("ctx-window")]
    [InlineData("ctx-prune")]
    public async Task The_credited_compaction_saving_is_close_to_the_measured_change_in_cost(string feature)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Bursar.slnx"))) dir = dir.Parent;
        var data = Path.Combine(dir!.FullName, "..", "shared", "data", "context");
        var conversations = Bursar.Core.Context.CompactionEvaluation.Load(Path.Combine(data, "tau_bench_airline_gpt4o.json")).Take(30).ToArray();
        var tools = Bursar.Core.Context.CompactionEvaluation.LoadTools(Path.Combine(data, "tau_bench_airline_tools.json"));
        var calls = conversations.Sum(t => t.CallPoints().Count());
        async Task<IReadOnlyList<Bursar.Core.Ledger.LedgerRecord>> Replay(string f)
        {
            gw.Simulator.Cache.Clear();
            foreach (var t in conversations)
                foreach (var end in t.CallPoints())
                {
                    // the response cache off: the second replay must reach the provider as the first did
                    using var req = gw.Post("/v1/chat/completions", t.Request(end, tools, "gpt-4o").ToJsonString(), feature: f);
                    req.Headers.Add("x-bursar-cache", "off");
                    using var resp = await gw.Http.SendAsync(req);
                    Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
                }
            return await gw.LedgerAsync(f, calls);
        }
        var plain = await Replay(feature + "-off");
        var compacted = await Replay(feature);
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
