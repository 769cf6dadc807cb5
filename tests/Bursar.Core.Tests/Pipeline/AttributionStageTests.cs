using Bursar.Core.Attribution;
using Bursar.Core.Pipeline;
using Bursar.Core.Routing;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>The first stage: who is calling, what they may tag, and which route policy the call falls under.</summary>
public sealed class AttributionStageTests
{
    private static AttributionStage Stage(params RoutePolicy[] routes) => new(new RouteTable(new RoutingOptions { Routes = [.. routes] }));

    private static LeverCall Unattributed(string json, Bursar.Core.Keys.VirtualKey key, params (string, string)[] headers) =>
        Levers.Call(json, key: key, tags: Levers.Headers(headers), attribute: false);

    [Fact]
    public async Task The_keys_own_tags_apply_and_allowed_headers_add_the_rest()
    {
        var call = Unattributed(Levers.OpenAI("gpt-4o-mini", "hi"), Levers.Key(id: "key_eng", team: "eng", customers: ["acme"]),
            (AttributionResolver.FeatureHeader, "search"), (AttributionResolver.CustomerHeader, "acme"), (AttributionResolver.RunHeader, "run-1"), (AttributionResolver.TaskHeader, "classification"));
        var next = new FakeProvider();
        await Stage().InvokeAsync(call, next.Next, default);

        Assert.Null(call.Refusal);
        Assert.Equal(1, next.Calls);
        var a = call.Attribution;
        Assert.Equal(("key_eng", "eng", "acme", "search", "run-1", "classification"), (a.KeyId, a.Team, a.Customer, a.Feature, a.RunId, a.Task));
        Assert.Equal("gpt-4o-mini", call.Model); // the model to serve starts as the one asked for
    }

    [Fact]
    public async Task A_header_the_key_may_not_set_is_refused_with_403_naming_it_and_the_call_goes_no_further()
    {
        var call = Unattributed(Levers.OpenAI("gpt-4o-mini", "hi"), Levers.Key(allowed: ["feature"]), (AttributionResolver.TeamHeader, "finance"));
        var next = new FakeProvider();
        await Stage(new RoutePolicy { Name = "everything" }).InvokeAsync(call, next.Next, default);

        Assert.Equal(0, next.Calls);
        var r = Assert.IsType<LeverRefusal>(call.Refusal);
        Assert.Equal(403, r.Status);
        Assert.Equal(Blame.Caller, r.Blame);
        Assert.Contains(AttributionResolver.TeamHeader, r.Message);
        Assert.Contains("feature", r.Message); // what the key may set instead
        Assert.Equal((403, "client_error"), (call.StatusCode, call.Outcome));
        Assert.Null(call.Policy); // refused before any route was matched
    }

    [Fact]
    public async Task A_header_overriding_a_tag_the_key_fixes_is_refused_with_403()
    {
        var call = Unattributed(Levers.OpenAI("gpt-4o-mini", "hi"), Levers.Key(team: "eng"), (AttributionResolver.TeamHeader, "finance"));
        var next = new FakeProvider();
        await Stage().InvokeAsync(call, next.Next, default);

        Assert.Equal(0, next.Calls);
        Assert.Equal(403, call.Refusal!.Status);
        Assert.Contains("'eng'", call.Refusal.Message);
    }

    [Theory]
    [InlineData("x-bursar-feature", "a\u001b[31mb")]
    [InlineData("x-bursar-team", "tab\there")]
    [InlineData("x-bursar-task", "nul\u0000")]
    public async Task A_tag_with_a_control_character_is_a_400_naming_the_header(string header, string value)
    {
        var call = Unattributed(Levers.Anthropic("claude-sonnet-4-5", "hi"), Levers.Key(), (header, value));
        var next = new FakeProvider();
        await Stage().InvokeAsync(call, next.Next, default);

        Assert.Equal(0, next.Calls);
        var r = call.Refusal!;
        Assert.Equal(400, r.Status);
        Assert.Equal(header, r.Param);
        Assert.Contains(header, r.Message);
        Assert.Contains("control character", r.Message);
        Assert.Equal(400, call.StatusCode);
    }

    [Fact]
    public async Task The_first_matching_route_policy_is_set_on_the_call()
    {
        var other = new RoutePolicy { Name = "other-feature", Feature = "billing" };
        var support = new RoutePolicy { Name = "support-gpt4o", Feature = "support", RequestedModel = "gpt-4o*" };
        var fallback = new RoutePolicy { Name = "everything" };
        var stage = Stage(other, support, fallback);

        var call = Unattributed(Levers.OpenAI("gpt-4o-mini", "hi"), Levers.Key(), (AttributionResolver.FeatureHeader, "support"));
        await stage.InvokeAsync(call, new FakeProvider().Next, default);
        Assert.Same(support, call.Policy);
        Assert.Equal("support-gpt4o", call.Route);
        Assert.NotNull(call.Routes);
        Assert.Contains(support, call.Routes!.Routes);

        // another model of the same feature does not match the prefix: the next route that matches wins
        var claude = Unattributed(Levers.OpenAI("claude-haiku-4-5", "hi"), Levers.Key(), (AttributionResolver.FeatureHeader, "support"));
        await stage.InvokeAsync(claude, new FakeProvider().Next, default);
        Assert.Same(fallback, claude.Policy);
        Assert.Equal("everything", claude.Route);
    }

    [Fact]
    public async Task A_route_matches_on_the_request_shape_and_no_match_leaves_no_policy()
    {
        var small = new RoutePolicy { Name = "small-prompts", MaxInputTokens = 100 };
        var stage = Stage(small);

        var shortCall = Unattributed(Levers.OpenAI("gpt-4o-mini", "hi"), Levers.Key());
        await stage.InvokeAsync(shortCall, new FakeProvider().Next, default);
        Assert.Same(small, shortCall.Policy);

        var longCall = Unattributed(Levers.OpenAI("gpt-4o-mini", string.Join(" ", Enumerable.Repeat("many words here", 200))), Levers.Key());
        Assert.True(longCall.Request.EstimatedInputTokens > 100);
        var next = new FakeProvider();
        await stage.InvokeAsync(longCall, next.Next, default);
        Assert.Null(longCall.Policy);
        Assert.Null(longCall.Route);
        Assert.Equal(1, next.Calls); // no route is not a refusal
    }

    [Fact]
    public async Task Each_call_reads_the_route_table_in_force_when_it_starts()
    {
        var table = new RouteTable(new RoutingOptions { Routes = [new RoutePolicy { Name = "configured" }] });
        var stage = new AttributionStage(table);
        var before = Unattributed(Levers.OpenAI("gpt-4o-mini", "hi"), Levers.Key());
        await stage.InvokeAsync(before, new FakeProvider().Next, default);

        table.Install([new StoredRoute("stored", 0, new RoutePolicy { Name = "stored" })]);
        var after = Unattributed(Levers.OpenAI("gpt-4o-mini", "hi"), Levers.Key());
        await stage.InvokeAsync(after, new FakeProvider().Next, default);

        Assert.Equal("configured", before.Route);
        Assert.DoesNotContain(before.Routes!.Routes, r => r.Name == "stored"); // the earlier call keeps its snapshot
        Assert.Equal("stored", after.Route);
    }
}
