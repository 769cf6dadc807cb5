using System.IO.Pipelines;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Metering;
using Bursar.Core.Usage;
using Bursar.Providers.Dialects;
using Bursar.Providers.Simulator;
using Bursar.Providers.Sse;

namespace Bursar.Providers.Tests;

/// <summary>Anthropic context management: usage summed from <c>usage.iterations</c>, and the Simulator's clearing and compaction edits.</summary>
public sealed class ContextManagementTests
{
    private static TokenUsage Read(string usage) => UsageReader.ReadAnthropic(JsonDocument.Parse(usage).RootElement);

    [Fact]
    public void Iterations_are_summed_and_the_top_level_counts_ignored()
    {
        // PROVIDER_API.md section 10, the docs' example: top level 23,000 / 1,000; billed 203,000 in / 4,500 out
        var u = Read("""
            {"input_tokens":23000,"output_tokens":1000,"iterations":[
              {"type":"compaction","input_tokens":180000,"output_tokens":3500},
              {"type":"message","input_tokens":23000,"output_tokens":1000}]}
            """);
        Assert.Equal((203_000L, 4_500L), (u.TotalInputTokens, u.OutputTokens));
    }

    [Fact]
    public void Each_iterations_cache_reads_and_writes_by_ttl_are_kept()
    {
        var u = Read("""
            {"input_tokens":10,"cache_read_input_tokens":0,"output_tokens":5,"iterations":[
              {"type":"compaction","input_tokens":1000,"cache_read_input_tokens":4000,"cache_creation_input_tokens":0,"output_tokens":300},
              {"type":"message","input_tokens":10,"cache_read_input_tokens":0,"cache_creation_input_tokens":700,"cache_creation":{"ephemeral_5m_input_tokens":500,"ephemeral_1h_input_tokens":200},"output_tokens":5}]}
            """);
        Assert.Equal(new TokenUsage(1010, 4000, 500, 200, 305), u);
    }

    [Fact]
    public void On_demand_compaction_bills_its_iteration_though_the_top_level_is_zero()
    {
        var u = Read("""{"input_tokens":0,"output_tokens":0,"iterations":[{"type":"compaction","input_tokens":52000,"output_tokens":1800}]}""");
        Assert.Equal((52_000L, 1_800L), (u.TotalInputTokens, u.OutputTokens));
        // no iterations, or an empty list: the top level
        Assert.Equal(new TokenUsage(7, 0, 0, 0, 3), Read("""{"input_tokens":7,"output_tokens":3,"iterations":[]}"""));
    }

    private static async Task<(int Status, string Text)> Post(SimulatorHarness h, JsonObject body, string? beta)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, "/v1/messages") { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        req.Headers.Add("x-api-key", "k");
        if (beta is not null) req.Headers.Add("anthropic-beta", beta);
        using var resp = await h.Http.SendAsync(req);
        return ((int)resp.StatusCode, await resp.Content.ReadAsStringAsync());
    }

    /// <summary>An agent conversation: <paramref name="results"/> tool calls, each with a result of about <paramref name="words"/> x 4 tokens.</summary>
    private static JsonObject Agent(int results, int words, JsonObject? contextManagement = null, bool stream = false)
    {
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Prüfe bitte alle Buchungen. 全ての予約を確認してください。" });
        for (var i = 0; i < results; i++)
        {
            messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_use", ["id"] = $"toolu_{i}", ["name"] = i % 2 == 0 ? "search" : "lookup", ["input"] = new JsonObject { ["q"] = i } }) });
            messages.Add(new JsonObject { ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = $"toolu_{i}", ["content"] = SimulatorHarness.Words(words, "result" + i) }) });
        }
        var body = new JsonObject { ["model"] = "claude-sonnet-4-5", ["max_tokens"] = 200, ["messages"] = messages };
        if (contextManagement is not null) body["context_management"] = contextManagement;
        if (stream) body["stream"] = true;
        return body;
    }

    private static JsonObject Edits(params JsonObject[] edits) => new() { ["edits"] = new JsonArray([.. edits.Select(e => e.DeepClone())]) };

    [Fact]
    public async Task Clearing_old_tool_results_needs_its_beta_header_and_reports_what_it_cleared()
    {
        using var h = new SimulatorHarness();
        var clear = new JsonObject { ["type"] = "clear_tool_uses_20250919", ["trigger"] = new JsonObject { ["type"] = "input_tokens", ["value"] = 1000 }, ["keep"] = new JsonObject { ["type"] = "tool_uses", ["value"] = 2 } };
        var (status, text) = await Post(h, Agent(6, 100, Edits(clear)), beta: null);
        Assert.Equal(400, status);
        Assert.Contains("anthropic-beta header 'context-management-2025-06-27'", JsonNode.Parse(text)!["error"]!["message"]!.GetValue<string>());

        var (plainStatus, plainText) = await Post(h, Agent(6, 100), beta: null);
        var (okStatus, okText) = await Post(h, Agent(6, 100, Edits(clear)), ProviderSimulator.ContextManagementBeta);
        Assert.Equal((200, 200), (plainStatus, okStatus));
        var plain = JsonNode.Parse(plainText)!;
        var cleared = JsonNode.Parse(okText)!;
        var applied = cleared["context_management"]!["applied_edits"]!.AsArray().Single()!;
        Assert.Equal(("clear_tool_uses_20250919", 4), (applied["type"]!.GetValue<string>(), applied["cleared_tool_uses"]!.GetValue<int>()));
        var removed = applied["cleared_input_tokens"]!.GetValue<long>();
        Assert.True(removed > 1000, $"cleared {removed}");
        Assert.Equal(plain["usage"]!["input_tokens"]!.GetValue<long>() - removed, cleared["usage"]!["input_tokens"]!.GetValue<long>());
    }

    [Fact]
    public async Task Compaction_answers_with_a_compaction_block_first_and_bills_its_iteration()
    {
        using var h = new SimulatorHarness();
        var compact = new JsonObject { ["type"] = "compact_20260112", ["trigger"] = new JsonObject { ["type"] = "input_tokens", ["value"] = 50_000 } };
        var (bad, badText) = await Post(h, Agent(2, 10, Edits(new JsonObject { ["type"] = "compact_20260112", ["trigger"] = new JsonObject { ["type"] = "input_tokens", ["value"] = 1000 } })), ProviderSimulator.CompactionBeta);
        Assert.Equal(400, bad);
        Assert.Contains("trigger.value: must be at least 50000", JsonNode.Parse(badText)!["error"]!["message"]!.GetValue<string>());
        Assert.Equal(400, (await Post(h, Agent(2, 10, Edits(compact)), beta: null)).Status);

        // below the trigger: no compaction, but with the beta header the usage still lists its one message iteration
        var (_, smallText) = await Post(h, Agent(2, 10, Edits(compact)), ProviderSimulator.CompactionBeta);
        var small = JsonNode.Parse(smallText)!;
        Assert.Equal("message", small["usage"]!["iterations"]!.AsArray().Single()!["type"]!.GetValue<string>());
        Assert.NotEqual("compaction", small["content"]![0]!["type"]!.GetValue<string>());

        var (status, text) = await Post(h, Agent(12, 1200, Edits(compact)), ProviderSimulator.CompactionBeta);
        Assert.Equal(200, status);
        var answer = JsonNode.Parse(text)!;
        Assert.Equal("compaction", answer["content"]![0]!["type"]!.GetValue<string>());
        Assert.StartsWith("Summary of the conversation so far", answer["content"]![0]!["content"]!.GetValue<string>());
        var iterations = answer["usage"]!["iterations"]!.AsArray();
        Assert.Equal(["compaction", "message"], iterations.Select(i => i!["type"]!.GetValue<string>()));
        Assert.True(iterations[0]!["input_tokens"]!.GetValue<long>() >= 50_000);
        // the top level counts the message only; what the gateway bills is the sum
        Assert.Equal(iterations[1]!["input_tokens"]!.GetValue<long>(), answer["usage"]!["input_tokens"]!.GetValue<long>());
        var billed = UsageReader.ReadAnthropic(JsonDocument.Parse(answer["usage"]!.ToJsonString()).RootElement);
        Assert.Equal(iterations.Sum(i => i!["input_tokens"]!.GetValue<long>() + i["cache_read_input_tokens"]!.GetValue<long>() + i["cache_creation_input_tokens"]!.GetValue<long>()), billed.TotalInputTokens);
        Assert.Equal(iterations.Sum(i => i!["output_tokens"]!.GetValue<long>()), billed.OutputTokens);

        // the caller sends the block back: what precedes it is dropped, so the next call reads far less
        var next = Agent(12, 1200, Edits(compact));
        var messages = next["messages"]!.AsArray();
        messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = new JsonArray(answer["content"]![0]!.DeepClone(), new JsonObject { ["type"] = "text", ["text"] = "Done." }) });
        messages.Add(new JsonObject { ["role"] = "user", ["content"] = "Und jetzt?" });
        var (_, afterText) = await Post(h, next, ProviderSimulator.CompactionBeta);
        var after = JsonNode.Parse(afterText)!;
        Assert.True(after["usage"]!["input_tokens"]!.GetValue<long>() < 2_000, after["usage"]!.ToJsonString());
        Assert.Equal("message", after["usage"]!["iterations"]!.AsArray().Single()!["type"]!.GetValue<string>());
    }

    [Fact]
    public async Task Pause_after_compaction_answers_with_the_block_alone()
    {
        using var h = new SimulatorHarness();
        var compact = new JsonObject { ["type"] = "compact_20260112", ["pause_after_compaction"] = true };
        var (_, text) = await Post(h, Agent(12, 3200, Edits(compact)), ProviderSimulator.CompactionBeta);
        var answer = JsonNode.Parse(text)!;
        Assert.Equal("compaction", answer["stop_reason"]!.GetValue<string>());
        Assert.Equal("compaction", answer["content"]!.AsArray().Single()!["type"]!.GetValue<string>());
        var iteration = answer["usage"]!["iterations"]!.AsArray().Single()!;
        Assert.Equal("compaction", iteration["type"]!.GetValue<string>());
        Assert.Equal((0L, 0L), (answer["usage"]!["input_tokens"]!.GetValue<long>(), answer["usage"]!["output_tokens"]!.GetValue<long>()));
        var billed = UsageReader.ReadAnthropic(JsonDocument.Parse(answer["usage"]!.ToJsonString()).RootElement);
        Assert.Equal(iteration["input_tokens"]!.GetValue<long>(), billed.TotalInputTokens);
    }

    [Fact]
    public async Task A_streamed_compaction_sends_its_block_as_a_compaction_delta_and_the_meter_sums_the_iterations()
    {
        using var h = new SimulatorHarness();
        var compact = new JsonObject { ["type"] = "compact_20260112" };
        var (status, sse) = await Post(h, Agent(12, 3200, Edits(compact), stream: true), ProviderSimulator.CompactionBeta);
        Assert.Equal(200, status);
        Assert.Contains("\"type\":\"compaction_delta\"", sse);
        Assert.Contains("\"index\":1,\"content_block\":{\"type\":\"text\"", sse); // the answer's block comes after the compaction block

        var summary = new CallSummary();
        var output = new MemoryStream();
        var writer = PipeWriter.Create(output);
        await SsePump.PumpAsync(new MemoryStream(Encoding.UTF8.GetBytes(sse)), writer, new AnthropicMeteringHandler(summary, TimeProvider.System), default);
        await writer.CompleteAsync();
        Assert.Equal(sse, Encoding.UTF8.GetString(output.ToArray())); // relayed untouched
        var delta = sse.Split('\n').Last(l => l.StartsWith("data: {\"type\":\"message_delta\"", StringComparison.Ordinal))["data: ".Length..];
        var iterations = JsonNode.Parse(delta)!["usage"]!["iterations"]!.AsArray();
        Assert.Equal(2, iterations.Count);
        Assert.Equal(iterations.Sum(i => i!["input_tokens"]!.GetValue<long>() + i["cache_read_input_tokens"]!.GetValue<long>() + i["cache_creation_input_tokens"]!.GetValue<long>()), summary.Usage.TotalInputTokens);
        Assert.Equal(iterations.Sum(i => i!["output_tokens"]!.GetValue<long>()), summary.Usage.OutputTokens);
    }
}
