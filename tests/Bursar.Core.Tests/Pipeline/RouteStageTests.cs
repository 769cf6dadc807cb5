using System.Globalization;
using System.Text.Json.Nodes;
using Bursar.Core.Attribution;
using Bursar.Core.Pipeline;
using Bursar.Core.Routing;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>The route stage: a route's model or tier, a ladder's rung (complexity router or LLM classifier), and models nobody serves.</summary>
public sealed class RouteStageTests
{
    private static readonly ServedModels Served = new("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "claude-sonnet-4-5", "claude-haiku-4-5");

    private static RouteStage Stage(IDifficultyClassifier? classifier = null, IServedModels? served = null) =>
        new(ComplexityRouter.Default, classifier ?? IDifficultyClassifier.None, served ?? Served);

    private sealed class FakeClassifier(string? label) : IDifficultyClassifier
    {
        public List<(string Model, string Prompt, CallAttribution Attribution, string Route)> Asked { get; } = [];

        public Task<(string? Label, string Detail)> ClassifyAsync(LeverCall call, string model, string prompt, CallAttribution attribution, string route, CancellationToken cancellationToken)
        {
            Asked.Add((model, prompt, attribution, route));
            return Task.FromResult<(string?, string)>((label, label is null ? $"{model} answered 'perhaps'" : $"{model} said {label}"));
        }
    }

    [Fact]
    public async Task A_route_to_another_model_serves_it_and_says_why()
    {
        var route = new RoutePolicy { Name = "cheap-support", Model = "claude-haiku-4-5" };
        var call = Levers.Call(Levers.OpenAI("gpt-4o", "Where is my order?"), policy: route);
        var next = new FakeProvider();
        await Stage().InvokeAsync(call, next.Next, default);

        Assert.Equal(1, next.Calls);
        Assert.Equal("claude-haiku-4-5", call.Model);
        Assert.Equal("gpt-4o", call.RoutedFrom);
        Assert.Equal("policy: route 'cheap-support' serves claude-haiku-4-5 for gpt-4o", call.RoutingReason);
        Assert.Equal("gpt-4o", call.Request.Model); // the request itself is never changed
    }

    [Fact]
    public async Task A_tier_route_serves_the_cheaper_tier_of_the_requested_family_and_never_moves_up()
    {
        var small = new RoutePolicy { Name = "tier:classification", Task = "classification", Tier = "small" };
        var call = Levers.Call(Levers.OpenAI("gpt-4.1", "Is this spam?"), tags: Levers.Headers((AttributionResolver.TaskHeader, "classification")), policy: small);
        await Stage().InvokeAsync(call, new FakeProvider().Next, default);
        Assert.Equal("gpt-4.1-nano", call.Model);
        Assert.Equal("gpt-4.1", call.RoutedFrom);
        Assert.Equal("policy: route 'tier:classification' serves the small tier gpt-4.1-nano for gpt-4.1", call.RoutingReason);

        var top = new RoutePolicy { Name = "tier:reasoning", Tier = "top" };
        var already = Levers.Call(Levers.Anthropic("claude-haiku-4-5", "Plan my week"), "anthropic", policy: top);
        await Stage().InvokeAsync(already, new FakeProvider().Next, default);
        Assert.Equal("claude-haiku-4-5", already.Model); // a tier route never moves a call up
        Assert.Null(already.RoutedFrom);
        Assert.Null(already.RoutingReason);
    }

    [Fact]
    public async Task No_route_keeps_the_model_and_records_no_decision()
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi"));
        var next = new FakeProvider();
        await Stage().InvokeAsync(call, next.Next, default);
        Assert.Equal(1, next.Calls);
        Assert.Equal("gpt-4o-mini", call.Model);
        Assert.Null(call.RoutedFrom);
        Assert.Null(call.RoutingReason);
    }

    [Fact]
    public async Task A_model_nobody_serves_is_a_404_model_not_found_from_the_served_models()
    {
        var served = new ServedModels("gpt-4o-mini");
        var call = Levers.Call(Levers.OpenAI("gpt-9-ultra", "hi"));
        var next = new FakeProvider();
        await Stage(served: served).InvokeAsync(call, next.Next, default);

        Assert.Equal(0, next.Calls);
        var r = call.Refusal!;
        Assert.Equal((404, "model_not_found", "model"), (r.Status, r.Code, r.Param));
        Assert.Equal(served.NotServed("gpt-9-ultra"), r.Message);
        Assert.Equal((404, "client_error"), (call.StatusCode, call.Outcome));

        // a route whose target is not served is refused the same way
        var routed = Levers.Call(Levers.OpenAI("gpt-4o-mini", "hi"), policy: new RoutePolicy { Name = "gone", Model = "gpt-4.1" });
        await Stage(served: served).InvokeAsync(routed, next.Next, default);
        Assert.Equal(404, routed.Refusal!.Status);
        Assert.Equal(0, next.Calls);
    }

    [Fact]
    public async Task A_tier_route_to_a_model_nobody_serves_is_refused_naming_that_model_not_the_served_one_asked_for()
    {
        var served = new ServedModels("gpt-4.1"); // gpt-4.1-nano, the small tier of gpt-4.1, has no deployment
        var tier = new RoutePolicy { Name = "tier:classification", Task = "classification", Tier = "small" };
        var call = Levers.Call(Levers.OpenAI("gpt-4.1", "Is this spam?"), tags: Levers.Headers((AttributionResolver.TaskHeader, "classification")), policy: tier);
        await Stage(served: served).InvokeAsync(call, new FakeProvider().Next, default);

        var r = call.Refusal!;
        Assert.Equal(404, r.Status);
        Assert.Contains("gpt-4.1-nano", r.Message);
        Assert.Contains("tier:classification", r.Message);
        Assert.DoesNotContain("'gpt-4.1'", r.Message); // gpt-4.1 is served: the message must not say otherwise
    }

    private static RoutePolicy Ladder(double strongShare, string classifier = "complexity", string[]? rungs = null, string? classifierModel = null) =>
        new() { Name = "support-ladder", Ladder = rungs ?? ["gpt-4.1-nano", "gpt-4.1"], StrongShare = strongShare, Classifier = classifier, ClassifierModel = classifierModel };

    [Fact]
    public async Task A_ladder_route_picks_the_rung_the_default_complexity_router_gives_the_newest_user_turn()
    {
        var route = Ladder(0.5);
        var easy = Levers.Call(Levers.OpenAI("gpt-4.1", "Say hello."), policy: route);
        const string word = "A train leaves at 3 pm travelling 60 km per hour; a second train leaves at 4 pm at 80 km per hour. How long until the second train catches the first, "
            + "and what is the total distance each has travelled? Show the ratio of their speeds and the remaining distance each hour.";
        var hard = Levers.Call(Levers.OpenAI("gpt-4.1", word), policy: route);
        await Stage().InvokeAsync(easy, new FakeProvider().Next, default);
        await Stage().InvokeAsync(hard, new FakeProvider().Next, default);

        // an easy prompt goes down the ladder, a multi-step word problem stays on the top rung
        Assert.Equal("gpt-4.1-nano", easy.Model);
        Assert.Equal("gpt-4.1", easy.RoutedFrom);
        Assert.Equal("gpt-4.1", hard.Model);
        Assert.Null(hard.RoutedFrom);
        Assert.StartsWith("kept: classifier: route 'support-ladder'", hard.RoutingReason);

        // and each is the rung the shipped router's calibrated quantile gives
        foreach (var (call, text) in new[] { (easy, "Say hello."), (hard, word) })
        {
            var score = ComplexityRouter.Default.Score(text, null, 1);
            var (model, _) = route.Rung(ComplexityRouter.Default.QuantileOf(score));
            Assert.Equal(model, call.Model);
            Assert.Contains(string.Create(CultureInfo.InvariantCulture, $"score {score:F3}"), call.RoutingReason);
            Assert.EndsWith("-> " + model, call.RoutingReason);
        }
    }

    [Fact]
    public async Task A_ladder_scores_the_newest_user_turn_with_the_task_tag_and_the_turn_count_in_either_dialect()
    {
        var route = Ladder(0.5, rungs: ["claude-haiku-4-5", "claude-sonnet-4-5"]);
        var body = new JsonObject
        {
            ["model"] = "claude-sonnet-4-5", ["max_tokens"] = 100,
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = "first question" },
                new JsonObject { ["role"] = "assistant", ["content"] = "an answer" },
                new JsonObject { ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "Explain why the sky is blue." }) }),
        };
        var call = Levers.Call(body.ToJsonString(), "anthropic", tags: Levers.Headers((AttributionResolver.TaskHeader, "analysis")), policy: route);
        await Stage().InvokeAsync(call, new FakeProvider().Next, default);

        var score = ComplexityRouter.Default.Score("Explain why the sky is blue.\n", "analysis", 2);
        Assert.Contains(string.Create(CultureInfo.InvariantCulture, $"score {score:F3}"), call.RoutingReason);
        Assert.Equal(route.Rung(ComplexityRouter.Default.QuantileOf(score)).Model, call.Model);
    }

    [Fact]
    public async Task A_ladder_with_every_call_on_the_strong_share_keeps_the_top_rung()
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4.1-nano", "hi"), policy: Ladder(1.0));
        await Stage().InvokeAsync(call, new FakeProvider().Next, default);
        Assert.Equal("gpt-4.1", call.Model); // the ladder decides, whatever was asked
        Assert.Equal("gpt-4.1-nano", call.RoutedFrom);
    }

    [Theory]
    [InlineData("simple", 0)]
    [InlineData("medium", 1)]
    [InlineData("hard", 2)]
    public async Task The_llm_classifiers_label_picks_the_rung(string label, int rung)
    {
        var rungs = new[] { "gpt-4.1-nano", "gpt-4.1-mini", "gpt-4.1" };
        var classifier = new FakeClassifier(label);
        var route = Ladder(0.5, "llm", rungs);
        var call = Levers.Call(Levers.OpenAI("gpt-4.1", "Tell me a joke"), tags: Levers.Headers((AttributionResolver.FeatureHeader, "jokes")), policy: route);
        await Stage(classifier).InvokeAsync(call, new FakeProvider().Next, default);

        Assert.Equal(rungs[rung], call.Model);
        var asked = Assert.Single(classifier.Asked);
        Assert.Equal(("gpt-4.1-nano", "Tell me a joke", "jokes", "support-ladder"), (asked.Model, asked.Prompt, asked.Attribution.Feature, asked.Route)); // the cheapest rung is asked by default
        var why = $"llm classifier: route 'support-ladder' gpt-4.1-nano said {label} -> {rungs[rung]}";
        Assert.Equal(rungs[rung] == "gpt-4.1" ? "kept: " + why : why, call.RoutingReason); // the decision is on the ledger even when it keeps the model
        Assert.Equal(rungs[rung] == "gpt-4.1" ? null : "gpt-4.1", call.RoutedFrom);
    }

    [Fact]
    public async Task No_usable_label_from_the_llm_classifier_goes_to_the_top_rung_and_says_so()
    {
        var classifier = new FakeClassifier(null);
        var route = Ladder(0.5, "llm", ["gpt-4.1-nano", "gpt-4.1-mini", "gpt-4.1"], classifierModel: "gpt-4o-mini");
        var call = Levers.Call(Levers.OpenAI("gpt-4.1-mini", "Tell me a joke"), policy: route);
        await Stage(classifier).InvokeAsync(call, new FakeProvider().Next, default);

        Assert.Equal("gpt-4.1", call.Model);
        Assert.Equal("gpt-4.1-mini", call.RoutedFrom);
        Assert.Equal("gpt-4o-mini", Assert.Single(classifier.Asked).Model); // the configured classifier model
        Assert.Equal("llm classifier: route 'support-ladder' gpt-4o-mini answered 'perhaps' -> gpt-4.1 (no usable answer: top rung)", call.RoutingReason);
    }

    [Fact]
    public async Task Without_a_classifier_an_llm_ladder_goes_to_the_top_rung()
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4.1-nano", "hi"), policy: Ladder(0.5, "llm"));
        await Stage(IDifficultyClassifier.None).InvokeAsync(call, new FakeProvider().Next, default);
        Assert.Equal("gpt-4.1", call.Model);
        Assert.Contains("no LLM classifier is available", call.RoutingReason);
        Assert.EndsWith("(no usable answer: top rung)", call.RoutingReason);
    }
}
