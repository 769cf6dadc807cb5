using System.Text.Json.Nodes;
using Bursar.Core.Attribution;
using Bursar.Core.Caching;
using Bursar.Core.Pipeline;
using Bursar.Core.Routing;
using Bursar.Core.Tokens;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>Provider prompt caching as a stage: nothing below 1,024 tokens; Anthropic breakpoints and OpenAI's prompt_cache_key above.</summary>
public sealed class PromptCacheStageTests
{
    private static readonly string LongSystem = string.Join(" ", Enumerable.Range(0, 700).Select(i => $"rule {i} applies"));

    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-11-23T10:00:00Z"));
    private readonly PromptCacheOptions _options = new();

    private PromptCacheStage Stage() => new(_options, new PromptCachePlacer(TokenCounter.Default, _time), new VolatilePrefixDetector(), new PrefixFingerprint(TokenCounter.Default),
        Levers.Catalog, _time, NullLogger<PromptCacheStage>.Instance);

    private static async Task<LeverCall> Run(PromptCacheStage stage, LeverCall call)
    {
        var next = new FakeProvider();
        await stage.InvokeAsync(call, next.Next, default);
        Assert.Equal(1, next.Calls);
        return call;
    }

    private static (bool Changed, JsonObject Body) Apply(LeverCall call, bool anthropic)
    {
        var body = (JsonObject)call.Request.Body.DeepClone();
        var changed = call.Edits.ApplyTo(body, new EditTarget(anthropic, call.Model, call, default));
        return (changed, body);
    }

    [Fact]
    public async Task Below_1024_estimated_tokens_nothing_is_recorded_or_edited()
    {
        var call = await Run(Stage(), Levers.Call(Levers.Anthropic("claude-sonnet-4-5", "hi", system: "Be brief."), "anthropic"));
        Assert.True(call.Request.EstimatedInputTokens < PromptCacheStage.ModelMinimumTokens);
        Assert.False(call.Edits.Any);
        Assert.Null(call.Prefix);

        // a long system prompt whose estimate is under the minimum is left alone too: the stage trusts the one-pass estimate
        var underestimated = await Run(Stage(), Levers.Call(Levers.Anthropic("claude-sonnet-4-5", "hi", system: LongSystem), "anthropic", estimatedInputTokens: 1023));
        Assert.False(underestimated.Edits.Any);
        Assert.Null(underestimated.Prefix);
    }

    [Fact]
    public async Task Above_it_an_anthropic_body_gets_a_breakpoint_on_its_system_prompt_and_the_prefix_is_fingerprinted()
    {
        var call = await Run(Stage(), Levers.Call(Levers.Anthropic("claude-sonnet-4-5", "What does rule 3 say?", system: LongSystem), "anthropic"));
        Assert.True(call.Request.EstimatedInputTokens >= PromptCacheStage.ModelMinimumTokens);
        var (hash, tokens) = call.Prefix!.Value;
        Assert.Equal(new PrefixFingerprint(TokenCounter.Default).Of("claude-sonnet-4-5", LongSystem)!.Value.Hash, hash);
        Assert.True(tokens >= 1024, $"{tokens} prefix tokens");
        Assert.True(call.Edits.Any);

        var (changed, body) = Apply(call, anthropic: true);
        Assert.True(changed);
        Assert.Equal("ephemeral", body["system"]![0]!["cache_control"]!["type"]!.GetValue<string>());
        Assert.Equal(LongSystem, body["system"]![0]!["text"]!.GetValue<string>());
        Assert.True(call.PromptCachePlaced); // the caller had none: the saving is Bursar's
        Assert.False(body.ContainsKey("prompt_cache_key"));
        Assert.False(call.Request.Body["system"] is JsonArray); // the caller's request is not changed, only what goes upstream
    }

    [Fact]
    public async Task A_callers_own_breakpoint_is_kept_and_the_saving_is_not_credited_to_bursar()
    {
        var json = (JsonObject)JsonNode.Parse(Levers.Anthropic("claude-sonnet-4-5", "q", system: LongSystem))!;
        json["messages"]![0]!["content"]![0]!["cache_control"] = new JsonObject { ["type"] = "ephemeral" };
        var call = await Run(Stage(), Levers.Call(json.ToJsonString(), "anthropic"));
        var (changed, body) = Apply(call, anthropic: true);
        Assert.True(changed);
        Assert.NotNull(body["messages"]![0]!["content"]![0]!["cache_control"]);
        Assert.NotNull(body["system"]![0]!["cache_control"]);
        Assert.False(call.PromptCachePlaced);
    }

    [Fact]
    public async Task Above_it_an_openai_body_gets_a_prompt_cache_key_per_feature_and_tenant()
    {
        var call = await Run(Stage(), Levers.Call(Levers.OpenAI("gpt-4.1", "What does rule 3 say?", system: LongSystem),
            key: Levers.Key(id: "key_9", team: "eng"), tags: Levers.Headers((AttributionResolver.FeatureHeader, "docs"))));
        Assert.NotNull(call.Prefix);
        var (changed, body) = Apply(call, anthropic: false);
        Assert.True(changed);
        Assert.Equal(PromptCachePlacer.OpenAIPromptCacheKey("docs", "eng"), body["prompt_cache_key"]!.GetValue<string>());
        Assert.DoesNotContain("cache_control", body.ToJsonString());

        // without a team the key itself is the tenant
        var solo = await Run(Stage(), Levers.Call(Levers.OpenAI("gpt-4.1", "What does rule 3 say?", system: LongSystem), key: Levers.Key(id: "key_solo")));
        Assert.Equal(PromptCachePlacer.OpenAIPromptCacheKey(null, "key_solo"), Apply(solo, anthropic: false).Body["prompt_cache_key"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_callers_own_prompt_cache_key_is_kept()
    {
        var json = (JsonObject)JsonNode.Parse(Levers.OpenAI("gpt-4.1", "q", system: LongSystem))!;
        json["prompt_cache_key"] = "mine";
        var call = await Run(Stage(), Levers.Call(json.ToJsonString()));
        var (changed, body) = Apply(call, anthropic: false);
        Assert.False(changed);
        Assert.Equal("mine", body["prompt_cache_key"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_route_with_PromptCache_false_adds_no_edit_but_the_prefix_is_still_fingerprinted()
    {
        var off = new RoutePolicy { Name = "no-prompt-cache", PromptCache = false };
        var call = await Run(Stage(), Levers.Call(Levers.Anthropic("claude-sonnet-4-5", "q", system: LongSystem), "anthropic", policy: off));
        Assert.False(call.Edits.Any);
        Assert.NotNull(call.Prefix); // the advisor still sees the prefix
    }

    [Fact]
    public async Task A_disabled_feature_adds_no_edit_unless_its_route_turns_prompt_caching_on()
    {
        _options.DisabledFeatures.Add("legal");
        var tags = Levers.Headers((AttributionResolver.FeatureHeader, "legal"));
        var disabled = await Run(Stage(), Levers.Call(Levers.Anthropic("claude-sonnet-4-5", "q", system: LongSystem), "anthropic", tags: tags));
        Assert.False(disabled.Edits.Any);

        var on = await Run(Stage(), Levers.Call(Levers.Anthropic("claude-sonnet-4-5", "q", system: LongSystem), "anthropic", tags: tags,
            policy: new RoutePolicy { Name = "legal-cached", PromptCache = true }));
        Assert.True(on.Edits.Any);
    }

    [Fact]
    public async Task A_feature_that_opts_in_has_volatile_values_moved_after_the_stable_prefix()
    {
        _options.MoveVolatileToEnd.Add("support");
        var system = "Today is 2026-11-23 and the request id is 7f3e2a1b-0000-4c1d-9e2f-123456789abc. " + LongSystem;
        var call = await Run(Stage(), Levers.Call(Levers.OpenAI("gpt-4.1", "q", system: system), tags: Levers.Headers((AttributionResolver.FeatureHeader, "support"))));
        var (changed, body) = Apply(call, anthropic: false);
        Assert.True(changed);
        Assert.DoesNotContain("2026-11-23", body["messages"]![0]!["content"]!.GetValue<string>());
        Assert.Contains("2026-11-23", body["messages"]![1]!["content"]!.GetValue<string>());
        Assert.StartsWith("moved:", call.VolatilePrefix);
    }
}
