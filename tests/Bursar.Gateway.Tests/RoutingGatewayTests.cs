using Bursar.Hosting;
using System.ClientModel;
using System.Net;
using System.Text.Json.Nodes;
using Bursar.Providers.Simulator;
using OpenAI;
using OpenAI.Chat;

namespace Bursar.Gateway.Tests;

/// <summary>A gateway with route policies: task routes across providers, output caps, a classifier ladder, a fallback chain.</summary>
public sealed class RoutingFixture : GatewayFixture
{
    protected override IEnumerable<string> ExtraArgs =>
    [
        "--Bursar:Routing:Routes:0:Name=classify", "--Bursar:Routing:Routes:0:Task=classification", "--Bursar:Routing:Routes:0:Model=claude-haiku-4-5",
        "--Bursar:Routing:Routes:0:MaxTokens=40", "--Bursar:Routing:Routes:0:Stop:0=END-OF-LABEL",
        "--Bursar:Routing:Routes:1:Name=capped", "--Bursar:Routing:Routes:1:Task=capped", "--Bursar:Routing:Routes:1:MaxTokens=5",
        "--Bursar:Routing:Routes:2:Name=ladder", "--Bursar:Routing:Routes:2:Feature=ladder", "--Bursar:Routing:Routes:2:Ladder:0=gpt-4.1-nano",
        "--Bursar:Routing:Routes:2:Ladder:1=gpt-4.1", "--Bursar:Routing:Routes:2:StrongShare=0.5", "--Bursar:Routing:Routes:2:ConfidenceMargin=0",
        "--Bursar:Routing:Routes:3:Name=fallback", "--Bursar:Routing:Routes:3:Task=fallback", "--Bursar:Routing:Routes:3:Model=gpt-4o",
        "--Bursar:Routing:Routes:3:Fallbacks:0=gpt-small-window", "--Bursar:Routing:Routes:3:Fallbacks:1=claude-haiku-4-5",
        "--Bursar:Routing:Cooldown=00:00:30",
        "--Bursar:Routing:Routes:5:Name=llm-ladder", "--Bursar:Routing:Routes:5:Feature=llm-ladder", "--Bursar:Routing:Routes:5:Classifier=llm",
        "--Bursar:Routing:Routes:5:Ladder:0=gpt-4.1-nano", "--Bursar:Routing:Routes:5:Ladder:1=gpt-4.1-mini", "--Bursar:Routing:Routes:5:Ladder:2=gpt-4.1",
        "--Bursar:Routing:Routes:6:Name=no-cache", "--Bursar:Routing:Routes:6:Feature=route-no-cache", "--Bursar:Routing:Routes:6:ResponseCache=false",
        "--Bursar:Routing:Routes:7:Name=faq", "--Bursar:Routing:Routes:7:Feature=route-faq", "--Bursar:Routing:Routes:7:SemanticCache=true",
        "--Bursar:Routing:Routes:8:Name=auto", "--Bursar:Routing:Routes:8:RequestedModel=auto", "--Bursar:Routing:Routes:8:Classifier=llm",
        "--Bursar:Routing:Routes:8:Ladder:0=gpt-4.1-nano", "--Bursar:Routing:Routes:8:Ladder:1=gpt-4.1",
        "--Bursar:Routing:Routes:9:Name=to-gpt", "--Bursar:Routing:Routes:9:Task=summarize-cheap", "--Bursar:Routing:Routes:9:Model=gpt-4.1-mini",
        "--Bursar:Routing:Routes:4:Name=learned", "--Bursar:Routing:Routes:4:Task=learned", "--Bursar:Routing:Routes:4:LearnMaxTokens=true",
        "--Bursar:Prices:1:Model=gpt-small-window", "--Bursar:Prices:1:Provider=openai", "--Bursar:Prices:1:Input=0.1", "--Bursar:Prices:1:Output=0.4", "--Bursar:Prices:1:ContextWindow=50",
    ];
}

[CollectionDefinition(Name)]
public sealed class RoutingCollection : ICollectionFixture<RoutingFixture>
{
    public const string Name = "routing";
}

[Collection(RoutingCollection.Name)]
public sealed class RoutingGatewayTests(RoutingFixture gw)
{
    private async Task<(HttpStatusCode Status, JsonNode? Body)> Send(string task, string feature, string text, string model = "gpt-4.1", int? maxTokens = null)
    {
        var body = new JsonObject { ["model"] = model, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }) };
        if (maxTokens is not null) body["max_completion_tokens"] = maxTokens;
        using var req = gw.Post("/v1/chat/completions", body.ToJsonString(), feature: feature);
        req.Headers.Add("x-bursar-task", task);
        using var resp = await gw.Http.SendAsync(req);
        return (resp.StatusCode, JsonNode.Parse(await resp.Content.ReadAsStringAsync()));
    }

    [Fact]
    public async Task A_task_route_serves_another_providers_model_through_the_official_sdk_and_credits_the_saving()
    {
        var feature = "route-" + Guid.NewGuid().ToString("N")[..8];
        var options = new OpenAIClientOptions { Endpoint = new Uri(gw.BaseUrl + "/v1"), NetworkTimeout = TimeSpan.FromSeconds(30) };
        options.AddPolicy(new HeaderPolicy("x-bursar-task", "classification"), System.ClientModel.Primitives.PipelinePosition.PerCall);
        options.AddPolicy(new HeaderPolicy("x-bursar-feature", feature), System.ClientModel.Primitives.PipelinePosition.PerCall);
        var client = new ChatClient("gpt-4.1", new ApiKeyCredential(gw.Key), options);
        ChatCompletion answer = await client.CompleteChatAsync([new UserChatMessage("Label this ticket: refund request [[sim:tokens=20]]")]);
        Assert.False(string.IsNullOrEmpty(answer.Content[0].Text));
        var row = Assert.Single(await gw.LedgerAsync(feature));
        Assert.Equal("gpt-4.1", row.RequestedModel);
        Assert.StartsWith("claude-haiku-4-5", row.ServedModel);
        Assert.StartsWith("anthropic", row.Provider);
        Assert.Equal("classify", row.Route);
        Assert.Contains("policy: route 'classify'", row.RoutingReason);
        // gpt-4.1 bills $2/$8 per M, haiku $1/$5: the same tokens cost more on the model asked for
        var asked = (row.InputTokens * 2m + row.OutputTokens * 8m) / 1_000_000m;
        Assert.Equal(asked - row.Cost!.Value, row.SavingRouting);
        Assert.True(row.SavingRouting > 0);
    }

    [Fact]
    public async Task A_route_cap_lowers_max_tokens_and_never_raises_the_callers()
    {
        var feature = "cap-" + Guid.NewGuid().ToString("N")[..8];
        var (status, body) = await Send("capped", feature, "Write a long essay [[sim:tokens=200]]");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("length", (string?)body!["choices"]![0]!["finish_reason"]);
        Assert.Equal(5, (int)body["usage"]!["completion_tokens"]!);
        (status, body) = await Send("capped", feature, "Short please [[sim:tokens=200]]", maxTokens: 3);
        Assert.Equal(3, (int)body!["usage"]!["completion_tokens"]!);
        var rows = await gw.LedgerAsync(feature, 2);
        Assert.All(rows, r => Assert.Equal("length", r.FinishReason));
    }

    [Fact]
    public void Route_caps_and_stops_are_applied_in_the_upstream_dialect()
    {
        var openai = new JsonObject { ["max_tokens"] = 500, ["stop"] = "###" };
        Assert.True(Bursar.Core.Routing.OutputCaps.Apply(openai, anthropic: false, 40, ["END"]));
        Assert.Equal(40, (int)openai["max_tokens"]!);
        Assert.Equal(["###", "END"], openai["stop"]!.AsArray().Select(x => (string)x!));
        var anthropic = new JsonObject { ["max_tokens"] = 20 };
        Assert.True(Bursar.Core.Routing.OutputCaps.Apply(anthropic, anthropic: true, 40, ["END"]));
        Assert.Equal(20, (int)anthropic["max_tokens"]!); // the caller's lower limit stays
        Assert.Equal(["END"], anthropic["stop_sequences"]!.AsArray().Select(x => (string)x!));
        var none = new JsonObject();
        Assert.True(Bursar.Core.Routing.OutputCaps.Apply(none, anthropic: false, 64, []));
        Assert.Equal(64, (int)none["max_completion_tokens"]!);
    }

    [Fact]
    public async Task The_classifier_ladder_sends_easy_prompts_down_and_hard_ones_up_and_says_why()
    {
        // the task tag is the router's category: a geography lookup is easy for the small model, a multi-step word problem is not
        const string feature = "ladder";
        await Send("high_school_geography", feature, "What is the capital of France?");
        await Send("math", feature, "Janet has 3 times as many apples as Tom. If Tom gives 25% of his 48 apples to Janet and she then sells half of her total at $1.25 each, how much money does she make? Show the derivation step by step, then compute the remaining ratio.");
        var rows = (await gw.LedgerAsync(feature, 2)).OrderBy(r => r.Timestamp).ToArray();
        Assert.True(rows[0].ServedModel!.StartsWith("gpt-4.1-nano", StringComparison.Ordinal), rows[0].RoutingReason + " | " + rows[1].RoutingReason);
        Assert.Contains("classifier: route 'ladder'", rows[0].RoutingReason);
        Assert.True(rows[0].SavingRouting > 0);
        Assert.StartsWith("gpt-4.1", rows[1].ServedModel);
        Assert.DoesNotContain("nano", rows[1].ServedModel);
        Assert.StartsWith("kept: classifier", rows[1].RoutingReason);
    }

    [Fact]
    public async Task A_failing_model_falls_back_skips_a_too_small_context_window_and_cools_down()
    {
        var feature = "fallback-" + Guid.NewGuid().ToString("N")[..8];
        // gpt-4o answers 529 on every attempt (1 + 2 retries): the chain skips gpt-small-window (50-token window) and serves claude-haiku-4-5
        gw.Simulator.Options.Faults.Enqueue(new SimulatorFault(529), 3);
        var (status, body) = await Send("fallback", feature, "Please summarise the attached text about logistics and delivery times in a few words: " + string.Join(' ', Enumerable.Range(0, 60).Select(i => "parcel" + i)) + " [[sim:tokens=10]]", model: "gpt-4o");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.NotNull(body!["choices"]); // answered in the caller's dialect
        var row = Assert.Single(await gw.LedgerAsync(feature));
        Assert.StartsWith("claude-haiku-4-5", row.ServedModel);
        Assert.Contains("fallback to claude-haiku-4-5 after gpt-4o: 529", row.RoutingReason);
        Assert.Contains("skipped gpt-small-window (context window 50 tokens", row.RoutingReason);
        // the openai deployment is cooling down: the next call goes to the fallback first, without a failed attempt
        (status, _) = await Send("fallback", feature, "Another one [[sim:tokens=5]]", model: "gpt-4o");
        Assert.Equal(HttpStatusCode.OK, status);
        var second = (await gw.LedgerAsync(feature, 2)).OrderBy(r => r.Timestamp).Last();
        Assert.StartsWith("claude-haiku-4-5", second.ServedModel);
        Assert.Contains("cooling down", second.RoutingReason);
        Assert.True(gw.Services.GetService(typeof(Bursar.Gateway.Routing.DeploymentHealth)) is Bursar.Gateway.Routing.DeploymentHealth h && h.IsCooling("openai"));
    }

    [Fact]
    public async Task A_learned_cap_comes_from_the_routes_ledger_and_caps_the_next_call()
    {
        var feature = "learned-" + Guid.NewGuid().ToString("N")[..8];
        var (status, body) = await Send("learned", feature, "Before any data [[sim:tokens=300]]");
        Assert.True((int)body!["usage"]!["completion_tokens"]! >= 300); // nothing learned yet: no cap
        for (var i = 0; i < 30; i++) await Send("learned", feature, $"Answer {i} [[sim:tokens={20 + i % 20}]]");
        var rows = await gw.LedgerAsync(feature, 31);
        var service = (Bursar.Hosting.OutputCapService)gw.Services.GetService(typeof(Bursar.Hosting.OutputCapService))!;
        await service.RecomputeAsync(default);
        var learner = (Bursar.Core.Routing.OutputCapLearner)gw.Services.GetService(typeof(Bursar.Core.Routing.OutputCapLearner))!;
        var cap = Assert.Single(learner.Caps, c => c.Route == "learned");
        var outputs = rows.Select(r => r.OutputTokens).Order().ToArray();
        Assert.Equal((int)Math.Ceiling(outputs[(int)Math.Ceiling(0.95 * outputs.Length) - 1] * 1.1), cap.Cap);
        (status, body) = await Send("learned", feature, "A verbose one [[sim:tokens=300]]");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(cap.Cap, (int)body!["usage"]!["completion_tokens"]!);
        Assert.Equal("length", (string?)body["choices"]![0]!["finish_reason"]);
    }

    [Fact]
    public async Task Routes_put_through_the_admin_api_take_effect_at_once_and_are_validated()
    {
        var feature = "api-" + Guid.NewGuid().ToString("N")[..8];
        var (status, body) = await gw.AdminAsync(HttpMethod.Put, "/admin/routes/api-route",
            new Dictionary<string, object> { ["feature"] = feature, ["model"] = "gpt-4.1-nano", ["max_tokens"] = 7, ["priority"] = 0 });
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("stored", (string?)body!["source"]);
        var (_, answer) = await Send("anything", feature, "Tell me a long story [[sim:tokens=100]]");
        Assert.Equal(7, (int)answer!["usage"]!["completion_tokens"]!);
        var row = Assert.Single(await gw.LedgerAsync(feature));
        Assert.Equal(("api-route", "gpt-4.1"), (row.Route, row.RequestedModel));
        Assert.StartsWith("gpt-4.1-nano", row.ServedModel);

        (status, body) = await gw.AdminAsync(HttpMethod.Get, "/admin/routes");
        var routes = body!["routes"]!.AsArray();
        Assert.Equal("api-route", (string?)routes[0]!["name"]); // stored routes come first
        Assert.Contains(routes, r => (string?)r!["name"] == "classify" && (string?)r["source"] == "configuration");

        (status, body) = await gw.AdminAsync(HttpMethod.Put, "/admin/routes/bad", new Dictionary<string, object> { ["model"] = "nowhere-model" });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("'nowhere-model'", (string)body!["detail"]!);
        Assert.Contains("route 'bad'", (string)body["detail"]!);
        (status, body) = await gw.AdminAsync(HttpMethod.Put, "/admin/routes/bad", new Dictionary<string, object> { ["max_tokens"] = "lots" });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("max_tokens", (string)body!["detail"]!);

        (status, _) = await gw.AdminAsync(HttpMethod.Delete, "/admin/routes/api-route");
        Assert.Equal(HttpStatusCode.NoContent, status);
        (status, _) = await gw.AdminAsync(HttpMethod.Delete, "/admin/routes/api-route");
        Assert.Equal(HttpStatusCode.NotFound, status);
        await Send("anything", feature, "Again [[sim:tokens=20]]");
        var second = (await gw.LedgerAsync(feature, 2)).OrderBy(r => r.Timestamp).Last();
        Assert.Null(second.Route);
        Assert.StartsWith("gpt-4.1", second.ServedModel);
        Assert.DoesNotContain("nano", second.ServedModel);
    }

    [Fact]
    public async Task The_llm_classifier_asks_the_cheapest_tier_meters_that_call_and_goes_up_when_it_fails()
    {
        const string feature = "llm-ladder";
        await Send("any", feature, "Hello there, quick one. [[sim:tokens=5]]");
        await Send("any", feature, "Review this design: " + new string('x', 400) + " [[sim:tokens=5]]");
        await Send("any", feature, "Prove this: " + new string('y', 900) + " [[sim:tokens=5]]");
        var rows = (await gw.LedgerAsync(feature, 6)).OrderBy(r => r.Timestamp).ToArray();
        var calls = rows.Where(r => r.Task != "routing-classifier").ToArray();
        var classifier = rows.Where(r => r.Task == "routing-classifier").ToArray();
        Assert.Equal(3, classifier.Length);
        Assert.All(classifier, r => Assert.StartsWith("gpt-4.1-nano", r.ServedModel));
        Assert.All(classifier, r => Assert.True(r.Cost > 0 && r.OutputTokens <= 5));
        Assert.StartsWith("gpt-4.1-nano", calls[0].ServedModel);
        Assert.StartsWith("gpt-4.1-mini", calls[1].ServedModel);
        Assert.Matches("^gpt-4\\.1(-\\d{4}-\\d{2}-\\d{2})?$", calls[2].ServedModel);
        Assert.Contains("llm classifier: route 'llm-ladder' 'simple' from gpt-4.1-nano", calls[0].RoutingReason);

        // the classifier's provider fails (after its retries): the call still goes through, on the top rung, and says why
        gw.Simulator.Options.Faults.Enqueue(new Bursar.Providers.Simulator.SimulatorFault(500), 3);
        await Send("any", feature, "Hello again [[sim:tokens=5]]");
        var last = (await gw.LedgerAsync(feature, 8)).Where(r => r.Task != "routing-classifier").OrderBy(r => r.Timestamp).Last();
        Assert.StartsWith("gpt-4.1", last.ServedModel);
        Assert.DoesNotContain("nano", last.ServedModel);
        Assert.Contains("no usable answer: top rung", last.RoutingReason);
    }

    [Fact]
    public async Task A_route_turns_levers_on_and_off_for_its_calls()
    {
        async Task<string?> Cache(string feature, string text)
        {
            var body = new JsonObject { ["model"] = "gpt-4o-mini", ["temperature"] = 0, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }) };
            using var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", body.ToJsonString(), feature: feature));
            Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
            return resp.Headers.GetValues("x-bursar-cache").Single();
        }
        var same = "What are your opening hours? " + Guid.NewGuid();
        Assert.Equal("bypass", await Cache("route-no-cache", same)); // deterministic, but the route turns the exact cache off
        Assert.Equal("bypass", await Cache("route-no-cache", same));
        // the semantic cache is on for this route although its feature is not in Bursar:SemanticCache:Features
        var id = Guid.NewGuid().ToString("N")[..6];
        Assert.Equal("miss", await Cache("route-faq", $"how do I reset my password for account {id}"));
        Assert.Equal("semantic-hit", await Cache("route-faq", $"How do I reset my password for account {id}?"));
    }

    [Fact]
    public async Task A_ladder_route_can_answer_a_virtual_model_name_and_a_cache_hit_skips_the_classifier()
    {
        var feature = "auto-" + Guid.NewGuid().ToString("N")[..8];
        var body = new JsonObject { ["model"] = "auto", ["temperature"] = 0, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Say hi " + feature }) }.ToJsonString();
        var cache = new string[2];
        for (var i = 0; i < 2; i++)
        {
            using var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", body, feature: feature));
            Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
            cache[i] = resp.Headers.GetValues("x-bursar-cache").Single();
        }
        Assert.Equal(["miss", "hit"], cache);
        var rows = await gw.LedgerAsync(feature, 3);
        await Task.Delay(200); // a second classifier row, if one were written, would have landed by now
        rows = await gw.LedgerAsync(feature, 3);
        Assert.Single(rows, r => r.Task == "routing-classifier");
        var first = rows.Where(r => r.Task != "routing-classifier").OrderBy(r => r.Timestamp).First();
        Assert.Equal("auto", first.RequestedModel);
        Assert.StartsWith("gpt-4.1-nano", first.ServedModel);
    }

    [Fact]
    public async Task The_llm_classifiers_cost_counts_in_the_callers_budget()
    {
        var customer = "llm-budget-" + Guid.NewGuid().ToString("N")[..6];
        var key = await gw.CreateKeyAsync(team: null, customer: customer);
        var (status, _) = await gw.AdminAsync(HttpMethod.Put, $"/admin/budgets/{customer}", new { scope = "customer", value = customer, period = "month", limit_usd = 100m });
        Assert.Equal(HttpStatusCode.OK, status);
        var body = new JsonObject { ["model"] = "gpt-4.1", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Short question [[sim:tokens=5]]" }) }.ToJsonString();
        using (var resp = await gw.Http.SendAsync(gw.Post("/v1/chat/completions", body, key, feature: "llm-ladder"))) Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
        var rows = (await gw.Store.ReadAsync(new Bursar.Core.Ledger.LedgerQuery { Limit = 100_000 }, default)).Where(r => r.Customer == customer).ToArray();
        for (var i = 0; i < 100 && rows.Length < 2; i++)
        {
            await Task.Delay(25);
            rows = (await gw.Store.ReadAsync(new Bursar.Core.Ledger.LedgerQuery { Limit = 100_000 }, default)).Where(r => r.Customer == customer).ToArray();
        }
        Assert.Equal(2, rows.Length); // the call and its classifier call
        var (_, budgets) = await gw.AdminAsync(HttpMethod.Get, "/admin/budgets");
        var spent = (decimal)budgets!.AsArray().Single(b => (string?)b!["id"] == customer)!["spent_usd"]!;
        Assert.Equal(rows.Sum(r => r.Cost!.Value), spent);
    }

    private sealed class TagHeaders(string feature, string task) : DelegatingHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            request.Headers.Add("x-bursar-feature", feature);
            request.Headers.Add("x-bursar-task", task);
            return base.SendAsync(request, cancellationToken);
        }
    }

    [Fact]
    public async Task A_claude_request_from_the_anthropic_sdk_is_routed_to_a_gpt_model_and_streams_back_as_anthropic_events()
    {
        var feature = "an-route-" + Guid.NewGuid().ToString("N")[..8];
        var client = new Anthropic.AnthropicClient
        {
            ApiKey = gw.Key, BaseUrl = gw.BaseUrl, MaxRetries = 0,
            HttpClient = new HttpClient(new TagHeaders(feature, "summarize-cheap") { InnerHandler = new HttpClientHandler() }),
        };
        var text = new System.Text.StringBuilder();
        var stopped = false;
        await foreach (var ev in client.Messages.CreateStreaming(new Anthropic.Models.Messages.MessageCreateParams
        {
            Model = "claude-sonnet-4-5", MaxTokens = 200, Messages = [new Anthropic.Models.Messages.UserMessageParam("Summarize: the parcel left the depot [[sim:tokens=30]]")],
        }))
        {
            if (ev.TryPickContentBlockDelta(out var d) && d.Delta.TryPickText(out var t)) text.Append(t.Text);
            if (ev.TryPickStop(out _)) stopped = true;
        }
        Assert.True(text.Length > 0);
        Assert.True(stopped);
        var row = Assert.Single(await gw.LedgerAsync(feature));
        Assert.Equal("claude-sonnet-4-5", row.RequestedModel);
        Assert.StartsWith("gpt-4.1-mini", row.ServedModel);
        Assert.StartsWith("openai", row.Provider);
        Assert.True(row.Streamed && row.OutputTokens > 0 && row.SavingRouting > 0);
    }
}
