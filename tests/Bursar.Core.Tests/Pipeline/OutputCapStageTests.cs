using System.Text.Json.Nodes;
using Bursar.Core.Ledger;
using Bursar.Core.Pipeline;
using Bursar.Core.Routing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>Output caps and stop sequences: the limit admission reserves, and the edit each face applies.</summary>
public sealed class OutputCapStageTests
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-11-23T10:00:00Z"));

    private OutputCapStage Stage(params RoutePolicy[] routes) => new(new OutputCapLearner(new RoutingOptions { Routes = [.. routes] }, _time));

    private static readonly RoutePolicy Capped = new() { Name = "capped", MaxTokens = 200, Stop = ["<END>", "###"] };

    private async Task<LeverCall> Run(OutputCapStage stage, string json, string dialect = "openai", RoutePolicy? policy = null)
    {
        var call = Levers.Call(json, dialect, policy: policy);
        var next = new FakeProvider();
        await stage.InvokeAsync(call, next.Next, default);
        Assert.Equal(1, next.Calls);
        return call;
    }

    private static JsonObject Edited(LeverCall call, bool anthropic)
    {
        var body = (JsonObject)call.Request.Body.DeepClone();
        call.Edits.ApplyTo(body, new EditTarget(anthropic, call.Model, call, default));
        return Upstream(body);
    }

    /// <summary>What goes upstream: the edited DOM as bytes, read back.</summary>
    private static JsonObject Upstream(JsonObject body) => (JsonObject)JsonNode.Parse(body.ToJsonString())!;

    [Theory]
    [InlineData(1000L, 200L)]
    [InlineData(null, 200L)]
    [InlineData(50L, 50L)]
    [InlineData(200L, 200L)]
    public async Task The_cap_lowers_the_output_limit_but_never_raises_the_callers(long? asked, long expected)
    {
        var call = await Run(Stage(Capped), Levers.OpenAI("gpt-4o-mini", "Write an essay", maxTokens: asked), policy: Capped);
        Assert.Equal(200, call.OutputCap);
        Assert.Equal(expected, call.MaxTokens);
        Assert.True(call.Edits.Any);
        // what goes upstream says the same
        Assert.Equal(expected, Edited(call, anthropic: false)[asked is null ? "max_completion_tokens" : "max_tokens"]!.GetValue<long>());
    }

    [Fact]
    public async Task Without_a_route_or_a_cap_the_callers_limit_stands_and_nothing_is_edited()
    {
        var none = await Run(Stage(), Levers.OpenAI("gpt-4o-mini", "hi", maxTokens: 5000));
        Assert.Equal(5000, none.MaxTokens);
        Assert.Null(none.OutputCap);
        Assert.False(none.Edits.Any);

        var plain = new RoutePolicy { Name = "plain" };
        var uncapped = await Run(Stage(plain), Levers.OpenAI("gpt-4o-mini", "hi"), policy: plain);
        Assert.Null(uncapped.MaxTokens);
        Assert.False(uncapped.Edits.Any);

        var stopOnly = new RoutePolicy { Name = "stop-only", Stop = ["<END>"] };
        var stopped = await Run(Stage(stopOnly), Levers.OpenAI("gpt-4o-mini", "hi", maxTokens: 300), policy: stopOnly);
        Assert.Equal(300, stopped.MaxTokens);
        Assert.True(stopped.Edits.Any); // stop sequences alone are an edit
        Assert.Equal(300, Edited(stopped, anthropic: false)["max_tokens"]!.GetValue<long>());
    }

    [Fact]
    public async Task On_an_openai_body_the_edit_writes_the_callers_limit_field_and_adds_stop_sequences_up_to_four()
    {
        var json = (JsonObject)JsonNode.Parse(Levers.OpenAI("gpt-4o-mini", "hi"))!;
        json["max_completion_tokens"] = 4000;
        json["stop"] = new JsonArray("STOP", "###", "x");
        var call = await Run(Stage(Capped), json.ToJsonString(), policy: Capped);
        var body = Edited(call, anthropic: false);

        Assert.Equal(200, body["max_completion_tokens"]!.GetValue<long>());
        Assert.False(body.ContainsKey("max_tokens"));
        Assert.Equal(["STOP", "###", "x", "<END>"], body["stop"]!.AsArray().Select(s => s!.GetValue<string>())); // no duplicate, at most 4

        var single = (JsonObject)JsonNode.Parse(Levers.OpenAI("gpt-4o-mini", "hi", maxTokens: 1000))!;
        single["stop"] = "STOP";
        var body2 = Edited(await Run(Stage(Capped), single.ToJsonString(), policy: Capped), anthropic: false);
        Assert.Equal(200, body2["max_tokens"]!.GetValue<long>());
        Assert.Equal(["STOP", "<END>", "###"], body2["stop"]!.AsArray().Select(s => s!.GetValue<string>()));
    }

    [Fact]
    public async Task On_an_anthropic_body_the_edit_writes_max_tokens_and_stop_sequences()
    {
        var json = (JsonObject)JsonNode.Parse(Levers.Anthropic("claude-sonnet-4-5", "hi", maxTokens: 8000))!;
        json["stop_sequences"] = new JsonArray("Human:");
        var call = await Run(Stage(Capped), json.ToJsonString(), "anthropic", Capped);
        Assert.Equal(200, call.MaxTokens);
        var body = Edited(call, anthropic: true);

        Assert.Equal(200, body["max_tokens"]!.GetValue<long>());
        Assert.False(body.ContainsKey("max_completion_tokens"));
        Assert.Equal(["Human:", "<END>", "###"], body["stop_sequences"]!.AsArray().Select(s => s!.GetValue<string>()));
        Assert.False(body.ContainsKey("stop"));
    }

    [Fact]
    public async Task An_openai_caller_translated_to_anthropic_gets_the_anthropic_fields()
    {
        // the face applies edits after translation, in the upstream's dialect: the same call, edited for each
        var call = await Run(Stage(Capped), Levers.OpenAI("gpt-4o-mini", "hi", maxTokens: 900), policy: Capped);
        var translated = new JsonObject { ["model"] = "claude-haiku-4-5", ["max_tokens"] = 900, ["messages"] = new JsonArray() };
        Assert.True(call.Edits.ApplyTo(translated, new EditTarget(Anthropic: true, "claude-haiku-4-5", call, default)));
        translated = Upstream(translated);
        Assert.Equal(200, translated["max_tokens"]!.GetValue<long>());
        Assert.Equal(2, translated["stop_sequences"]!.AsArray().Count);
    }

    [Fact]
    public async Task Applied_to_chat_options_the_edit_lowers_MaxOutputTokens_and_adds_stop_sequences()
    {
        var call = await Run(Stage(Capped), Levers.OpenAI("gpt-4o-mini", "hi"), policy: Capped);
        var target = new EditTarget(false, call.Model, call, default);

        var high = new ChatOptions { MaxOutputTokens = 1000, StopSequences = ["###"] };
        call.Edits.ApplyTo(high, target);
        Assert.Equal(200, high.MaxOutputTokens);
        Assert.Equal(["###", "<END>"], high.StopSequences);

        var low = new ChatOptions { MaxOutputTokens = 50 };
        call.Edits.ApplyTo(low, target);
        Assert.Equal(50, low.MaxOutputTokens);
        Assert.Equal(["<END>", "###"], low.StopSequences);

        var unset = new ChatOptions();
        call.Edits.ApplyTo(unset, target);
        Assert.Equal(200, unset.MaxOutputTokens);
    }

    [Fact]
    public async Task A_learned_cap_replaces_the_fixed_one_once_the_route_has_data()
    {
        var learning = new RoutePolicy { Name = "learning", MaxTokens = 1000, LearnMaxTokens = true };
        var learner = new OutputCapLearner(new RoutingOptions { Routes = [learning] }, _time);
        var stage = new OutputCapStage(learner);

        var before = await Run(stage, Levers.OpenAI("gpt-4o-mini", "hi"), policy: learning);
        Assert.Equal(1000, before.MaxTokens); // the fixed cap until there is data

        var rows = Enumerable.Range(1, 40).Select(i => new LedgerRecord
        {
            Id = "r" + i, Timestamp = _time.GetUtcNow(), Dialect = "openai", Outcome = "ok", Route = "learning", OutputTokens = 100 + i,
        }).ToArray();
        var learned = Assert.Single(learner.Recompute(rows));

        var after = await Run(stage, Levers.OpenAI("gpt-4o-mini", "hi", maxTokens: 4000), policy: learning);
        Assert.Equal(learned.Cap, after.OutputCap);
        Assert.Equal(learned.Cap, after.MaxTokens);
        Assert.Equal(OutputCaps.Learn(rows.Select(r => r.OutputTokens)), learned.Cap);
        Assert.True(learned.Cap < 1000);
    }
}
