using System.ComponentModel;
using Bursar.Core.Budgets;
using Bursar.Core.Pricing;
using Microsoft.Extensions.AI;

namespace Bursar.Extensions.AI.Tests;

/// <summary>UseBursar() around the official OpenAI and Anthropic SDKs' chat clients: metering, attribution, refusals, caches, routing, the order rules.</summary>
public sealed class UseBursarTests
{
    private static readonly PriceCatalog Catalog = new(PriceFiles.LoadBuiltIn());

    private static ChatOptions Tags(string feature, string? customer = null, float? temperature = null)
    {
        var o = new ChatOptions { AdditionalProperties = new() { ["bursar.feature"] = feature }, Temperature = temperature };
        if (customer is not null) o.AdditionalProperties["bursar.customer"] = customer;
        return o;
    }

    [Theory]
    [InlineData("openai", "gpt-4o-mini")]
    [InlineData("anthropic", "claude-haiku-4-5")]
    public async Task A_call_is_one_ledger_row_at_its_exact_cost_with_its_tags(string sdk, string model)
    {
        await using var host = new LibraryHost();
        var client = host.Client(sdk, model, o => o.Team = "library");
        var feature = $"plain-{sdk}";
        ChatResponse response;
        using (BursarScope.Begin(customer: "acme", task: "answer"))
            response = await client.GetResponseAsync("Say hello in three languages.", Tags(feature));
        Assert.False(string.IsNullOrWhiteSpace(response.Text));
        var row = Assert.Single(await host.LedgerAsync(feature));
        Assert.Equal(("library", "acme", "answer"), (row.Team, row.Customer, row.Task));
        Assert.Equal(model, row.RequestedModel);
        Assert.Equal(response.Usage!.InputTokenCount, row.InputTokens + row.CacheReadTokens + row.CacheWrite5mTokens + row.CacheWrite1hTokens);
        Assert.Equal(response.Usage.OutputTokenCount, row.OutputTokens);
        var price = Catalog.Find(model).Price!;
        Assert.Equal((row.InputTokens * price.Rates.Input + row.OutputTokens * price.Rates.Output) / 1_000_000m, row.Cost);
        Assert.Equal("ok", row.Outcome);
        Assert.False(row.Streamed);
        Assert.Equal(1, host.ProviderRequests);
    }

    [Theory]
    [InlineData("openai", "gpt-4.1-mini")]
    [InlineData("anthropic", "claude-sonnet-4-5")]
    public async Task A_streamed_call_is_metered_from_its_usage_update(string sdk, string model)
    {
        await using var host = new LibraryHost();
        var client = host.Client(sdk, model);
        var feature = $"stream-{sdk}";
        var text = new System.Text.StringBuilder();
        UsageDetails? usage = null;
        await foreach (var u in client.GetStreamingResponseAsync("Tell me a short story.", Tags(feature)))
        {
            text.Append(u.Text);
            foreach (var c in u.Contents) if (c is UsageContent uc) usage = uc.Details;
        }
        Assert.True(text.Length > 10);
        Assert.NotNull(usage);
        var row = Assert.Single(await host.LedgerAsync(feature));
        Assert.True(row.Streamed);
        Assert.False(row.UsageEstimated);
        Assert.Equal(usage!.OutputTokenCount, row.OutputTokens);
        Assert.Equal(usage.InputTokenCount, row.InputTokens + row.CacheReadTokens + row.CacheWrite5mTokens + row.CacheWrite1hTokens);
        Assert.NotNull(row.TimeToFirstTokenMs);
        Assert.True(row.Cost > 0);
    }

    [Fact]
    public async Task A_caller_that_stops_reading_a_stream_leaves_one_row_for_what_was_streamed()
    {
        await using var host = new LibraryHost();
        var client = host.Client("openai", "gpt-4.1-mini");
        var seen = 0;
        await foreach (var u in client.GetStreamingResponseAsync("Tell me a long story about the sea.", Tags("stopped")))
            if (u.Text.Length > 0 && ++seen == 3) break;
        var row = Assert.Single(await host.LedgerAsync("stopped"));
        Assert.True(row.Streamed);
        Assert.Equal("canceled", row.Outcome);
        Assert.True(row.OutputTokens >= 3, $"{row.OutputTokens} output tokens for 3 deltas");
        Assert.True(row.Cost > 0, "what was streamed is billed, never $0");
    }

    [Fact]
    public async Task Anthropic_one_hour_cache_writes_are_billed_as_one_hour_writes_and_reads_as_reads()
    {
        await using var host = new LibraryHost();
        var client = host.Client("anthropic", "claude-sonnet-4-5");
        var system = string.Join(" ", Enumerable.Repeat("You answer questions about the billing rules of the company, precisely and briefly.", 80));
        for (var i = 0; i < 2; i++)
        {
            var sys = new ChatMessage(ChatRole.System, system);
            sys.Contents[0].WithCacheControl(new Anthropic.Models.Messages.CacheControlEphemeral { Ttl = Anthropic.Models.Messages.Ttl.Ttl1h });
            await client.GetResponseAsync([sys, new ChatMessage(ChatRole.User, "What is the rule?")], Tags("cache-1h"));
        }
        var rows = await host.LedgerAsync("cache-1h", 2);
        Assert.True(rows[0].CacheWrite1hTokens > 1000);
        Assert.Equal(0, rows[0].CacheWrite5mTokens);
        Assert.Equal(rows[0].CacheWrite1hTokens, rows[1].CacheReadTokens);
        var rates = Catalog.Find("claude-sonnet-4-5").Price!.Rates;
        Assert.Equal((rows[0].InputTokens * rates.Input + rows[0].CacheWrite1hTokens * rates.CacheWrite1h!.Value + rows[0].OutputTokens * rates.Output) / 1_000_000m, rows[0].Cost);
        Assert.True(rows[1].SavingPromptCache > 0);
    }

    [Fact]
    public async Task Bursar_places_the_Anthropic_breakpoint_on_a_long_system_prompt_without_touching_the_callers_messages()
    {
        await using var host = new LibraryHost();
        var client = host.Client("anthropic", "claude-sonnet-4-5");
        var system = new ChatMessage(ChatRole.System, string.Join(" ", Enumerable.Repeat("You answer questions about the billing rules of the company, precisely and briefly.", 80)));
        for (var i = 0; i < 2; i++) await client.GetResponseAsync([system, new ChatMessage(ChatRole.User, $"Question {i}: what is the rule?")], Tags("placed"));
        Assert.Null(system.Contents[0].AdditionalProperties); // the caller's objects are not changed
        var rows = await host.LedgerAsync("placed", 2);
        Assert.True(rows[0].CacheWrite5mTokens > 1000, $"first call wrote {rows[0].CacheWrite5mTokens} tokens to the cache");
        Assert.Equal(rows[0].CacheWrite5mTokens, rows[1].CacheReadTokens);
        Assert.True(rows[1].SavingPromptCache > 0);
        // a short prompt is left alone
        await client.GetResponseAsync([new ChatMessage(ChatRole.System, "Be brief."), new ChatMessage(ChatRole.User, "Hi")], Tags("short"));
        Assert.Equal(0, (await host.LedgerAsync("short")).Single().CacheWrite5mTokens);
    }

    [Fact]
    public async Task Bursar_places_a_breakpoint_on_the_conversation_so_far_and_the_next_turn_reads_it()
    {
        await using var host = new LibraryHost();
        var client = host.Client("anthropic", "claude-sonnet-4-5");
        // a short system prompt (below the minimum, left unmarked) and a long first turn in German and Japanese
        var document = string.Join(" ", Enumerable.Repeat("Die Abrechnung erfolgt monatlich; 請求は毎月行われます。", 120));
        List<ChatMessage> conversation = [new(ChatRole.System, "Be brief."), new(ChatRole.User, "Read this contract: " + document), new(ChatRole.Assistant, "Noted."), new(ChatRole.User, "When is billing?")];
        await client.GetResponseAsync(conversation, Tags("history"));
        conversation.AddRange([new(ChatRole.Assistant, "Monthly."), new(ChatRole.User, "And the notice period?")]);
        await client.GetResponseAsync(conversation, Tags("history"));
        Assert.All(conversation, m => Assert.All(m.Contents, c => Assert.Null(c.AdditionalProperties))); // the caller's objects are not changed
        var rows = await host.LedgerAsync("history", 2);
        Assert.True(rows[0].CacheWrite5mTokens > 1000, $"the first call wrote {rows[0].CacheWrite5mTokens} tokens");
        Assert.Equal(rows[0].CacheWrite5mTokens, rows[1].CacheReadTokens); // the second call read the whole first turn back
        Assert.True(rows[1].CacheWrite5mTokens > 0, "the second call wrote its newer turn");
        Assert.True(rows[1].SavingPromptCache > 0);
    }

    [Fact]
    public async Task In_a_tool_loop_the_breakpoint_goes_on_the_last_tool_result_before_the_newest_one()
    {
        await using var host = new LibraryHost();
        var client = host.Client("anthropic", "claude-sonnet-4-5");
        var longResult = string.Join("\n", Enumerable.Range(0, 300).Select(i => $"row {i}: invoice {i * 7} paid"));
        List<ChatMessage> loop =
        [
            new(ChatRole.User, "Summarise the invoices."),
            new(ChatRole.Assistant, [new FunctionCallContent("c1", "list_invoices", new Dictionary<string, object?> { ["page"] = 1 })]),
            new(ChatRole.Tool, [new FunctionResultContent("c1", longResult)]),
            new(ChatRole.Assistant, [new FunctionCallContent("c2", "list_invoices", new Dictionary<string, object?> { ["page"] = 2 })]),
            new(ChatRole.Tool, [new FunctionResultContent("c2", "no more rows")]),
        ];
        var options = Tags("tool-loop");
        options.Tools = [AIFunctionFactory.Create((int page) => "", "list_invoices")];
        await client.GetResponseAsync(loop, options);
        loop.AddRange([new(ChatRole.Assistant, [new FunctionCallContent("c3", "list_invoices", new Dictionary<string, object?> { ["page"] = 3 })]), new(ChatRole.Tool, [new FunctionResultContent("c3", "no more rows")])]);
        await client.GetResponseAsync(loop, options);
        var rows = await host.LedgerAsync("tool-loop", 2);
        Assert.True(rows[0].CacheWrite5mTokens > 1000, $"the first call wrote {rows[0].CacheWrite5mTokens} tokens");
        Assert.Equal(rows[0].CacheWrite5mTokens, rows[1].CacheReadTokens);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_budget_refusal_throws_before_the_provider_is_called(bool stream)
    {
        await using var host = new LibraryHost();
        await host.AddBudgetAsync(BudgetScope.Customer, "tiny", 0.000001m);
        var client = host.Client("openai", "gpt-4o");
        var feature = $"refused-{stream}";
        var options = Tags(feature, customer: "tiny");
        var e = await Assert.ThrowsAsync<BudgetExceededException>(async () =>
        {
            if (!stream) await client.GetResponseAsync("Write an essay.", options);
            else await foreach (var _ in client.GetStreamingResponseAsync("Write an essay.", options)) Assert.Fail("no update may arrive before the refusal");
        });
        Assert.Contains("customer 'tiny'", e.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Equal("budget_exceeded", e.Refusal.Code);
        Assert.Equal(0, host.ProviderRequests);
        var row = Assert.Single(await host.LedgerAsync(feature));
        Assert.Equal(("refused", 0m), (row.Outcome, row.Cost));
    }

    [Fact]
    public async Task An_identical_deterministic_call_is_answered_from_the_cache_at_zero_with_its_saving()
    {
        await using var host = new LibraryHost();
        var client = host.Client("openai", "gpt-4o-mini");
        var first = await client.GetResponseAsync("What is the capital of France?", Tags("cached", temperature: 0));
        var second = await client.GetResponseAsync("What is the capital of France?", Tags("cached", temperature: 0));
        Assert.Equal(first.Text, second.Text);
        Assert.Equal(1, host.ProviderRequests);
        var rows = await host.LedgerAsync("cached", 2);
        Assert.Equal("bursar-cache", rows[1].Provider);
        Assert.Equal(0m, rows[1].Cost);
        Assert.Equal(rows[0].Cost, rows[1].SavingResponseCache);
        // streamed, the hit replays the same answer as updates
        var text = new System.Text.StringBuilder();
        await foreach (var u in client.GetStreamingResponseAsync("What is the capital of France?", Tags("cached-stream", temperature: 0))) text.Append(u.Text);
        await foreach (var u in client.GetStreamingResponseAsync("What is the capital of France?", Tags("cached-stream", temperature: 0))) { }
        Assert.Equal(2, host.ProviderRequests);
        var streamed = await host.LedgerAsync("cached-stream", 2);
        Assert.Equal("bursar-cache", streamed[1].Provider);
    }

    [Fact]
    public async Task A_route_serves_the_cheaper_model_and_the_ledger_says_why()
    {
        await using var host = new LibraryHost("Bursar:Routing:Routes:0:Name=classify", "Bursar:Routing:Routes:0:Task=classification", "Bursar:Routing:Routes:0:Model=gpt-4o-mini", "Bursar:Routing:Routes:0:MaxTokens=16");
        var client = host.Client("openai", "gpt-4o");
        using (BursarScope.Begin(feature: "routed", task: "classification"))
            await client.GetResponseAsync("Is this review positive? 'Great product.'");
        var row = Assert.Single(await host.LedgerAsync("routed"));
        Assert.Equal(("gpt-4o", "gpt-4o-mini", "classify"), (row.RequestedModel, row.ServedModel, row.Route));
        Assert.Contains("route 'classify' serves gpt-4o-mini", row.RoutingReason);
        Assert.True(row.SavingRouting > 0);
        Assert.True(row.OutputTokens <= 16);
    }

    [Fact]
    public async Task A_ladder_with_the_LLM_classifier_asks_the_cheap_model_first_and_records_both_calls()
    {
        await using var host = new LibraryHost("Bursar:Routing:Routes:0:Name=ladder", "Bursar:Routing:Routes:0:Feature=laddered",
            "Bursar:Routing:Routes:0:Ladder:0=gpt-4o-mini", "Bursar:Routing:Routes:0:Ladder:1=gpt-4o", "Bursar:Routing:Routes:0:Classifier=llm");
        var client = host.Client("openai", "gpt-4o");
        await client.GetResponseAsync("Say hi.", Tags("laddered"));
        var rows = await host.LedgerAsync("laddered", 2);
        var classifier = Assert.Single(rows, r => r.Task == "routing-classifier");
        Assert.Equal(("gpt-4o-mini", "ladder", "ok"), (classifier.ServedModel, classifier.Route, classifier.Outcome));
        Assert.True(classifier.Cost > 0);
        var routed = Assert.Single(rows, r => r.Task != "routing-classifier");
        Assert.StartsWith("llm classifier: route 'ladder'", routed.RoutingReason);
        Assert.Contains("from gpt-4o-mini", routed.RoutingReason);
        Assert.Equal(2, host.ProviderRequests);
    }

    [Fact]
    public async Task A_failing_model_falls_back_to_the_routes_next_model_and_the_ledger_says_why()
    {
        await using var host = new LibraryHost("Bursar:Routing:Routes:0:Name=resilient", "Bursar:Routing:Routes:0:Feature=fallback", "Bursar:Routing:Routes:0:Fallbacks:0=gpt-4o-mini");
        host.SimulatorOptions.Faults.Enqueue(new Bursar.Providers.Simulator.SimulatorFault(503));
        var client = host.Client("openai", "gpt-4o");
        var answer = await client.GetResponseAsync("Say hello.", Tags("fallback"));
        Assert.False(string.IsNullOrWhiteSpace(answer.Text));
        var row = Assert.Single(await host.LedgerAsync("fallback"));
        Assert.Equal(("gpt-4o", "gpt-4o-mini", "ok"), (row.RequestedModel, row.ServedModel, row.Outcome));
        Assert.StartsWith("fallback to gpt-4o-mini after gpt-4o: 503", row.RoutingReason);
        Assert.Equal(2, host.ProviderRequests);
    }

    [Fact]
    public async Task A_route_to_another_provider_goes_to_the_client_listed_for_that_model()
    {
        await using var host = new LibraryHost("Bursar:Routing:Routes:0:Name=cheap-claude", "Bursar:Routing:Routes:0:Feature=cross", "Bursar:Routing:Routes:0:Model=claude-haiku-4-5");
        var anthropic = SdkClients.Anthropic(host.Simulator, "claude-haiku-4-5");
        var client = host.Client("openai", "gpt-4o", o => o.ModelClients["claude-*"] = anthropic);
        var answer = await client.GetResponseAsync("Summarize: the meeting moved to Tuesday.", Tags("cross"));
        Assert.False(string.IsNullOrWhiteSpace(answer.Text));
        var row = Assert.Single(await host.LedgerAsync("cross"));
        Assert.Equal(("gpt-4o", "claude-haiku-4-5", "anthropic"), (row.RequestedModel, row.ServedModel, row.Provider));
        Assert.Equal(0, host.ProviderRequests); // the wrapped (OpenAI) client was not called
        Assert.True(row.SavingRouting > 0);
    }

    [Fact]
    public async Task A_similar_question_of_an_opted_in_feature_is_answered_by_the_semantic_cache()
    {
        await using var host = new LibraryHost("Bursar:SemanticCache:Features:0=faq", "Bursar:SemanticCache:Threshold=0.8");
        var client = host.Client("openai", "gpt-4o-mini");
        var first = await client.GetResponseAsync("How do I reset my password for account 7781?", Tags("faq"));
        var second = await client.GetResponseAsync("how do I reset my password for account 7781", Tags("faq"));
        Assert.Equal(first.Text, second.Text);
        Assert.Equal(1, host.ProviderRequests);
        var rows = await host.LedgerAsync("faq", 2);
        Assert.Equal(("bursar-semantic-cache", 0m), (rows[1].Provider, rows[1].Cost));
        Assert.Equal(rows[0].Cost, rows[1].SavingResponseCache);
        // another number is another question
        await client.GetResponseAsync("How do I reset my password for account 9921?", Tags("faq"));
        Assert.Equal(2, host.ProviderRequests);
    }

    [Fact]
    public async Task A_tool_loop_is_one_row_per_model_call_and_the_run_cap_stops_it()
    {
        await using var host = new LibraryHost("Bursar:Runs:MaxTurns=1");
        var calls = 0;
        var weather = AIFunctionFactory.Create([Description("The weather in a city")] (string city) => { calls++; return $"Sunny in {city}"; }, "get_weather");
        var client = host.Client("openai", "gpt-4o-mini", outer: b => b.UseFunctionInvocation());
        var options = Tags("agent");
        options.Tools = [weather];
        options.ToolMode = ChatToolMode.RequireAny;
        using var run = BursarScope.Begin(run: "run-1");
        var e = await Assert.ThrowsAsync<RunLimitExceededException>(() => client.GetResponseAsync("What is the weather in Paris? Use the tool.", options));
        Assert.Contains("run-1", e.Message);
        var rows = await host.LedgerAsync("agent", 2);
        Assert.Equal(1, rows.Count(r => r.Outcome == "ok"));
        Assert.Equal("refused", rows[^1].Outcome);
        Assert.All(rows, r => Assert.Equal("run-1", r.RunId));
        Assert.True(calls >= 1);
        Assert.Equal(1, host.ProviderRequests);
    }

    [Fact]
    public async Task Building_Bursar_outside_function_invocation_or_around_a_distributed_cache_throws_and_says_the_order()
    {
        await using var host = new LibraryHost();
        var inner = SdkClients.OpenAI(host.Simulator, "gpt-4o-mini");
        var outside = Assert.Throws<InvalidOperationException>(() => new ChatClientBuilder(inner).UseBursar().UseFunctionInvocation().Build(host.Services));
        Assert.Contains("UseFunctionInvocation() before UseBursar()", outside.Message);
        var cache = new Microsoft.Extensions.Caching.Distributed.MemoryDistributedCache(Microsoft.Extensions.Options.Options.Create(new Microsoft.Extensions.Caching.Memory.MemoryDistributedCacheOptions()));
        var cached = Assert.Throws<InvalidOperationException>(() => new ChatClientBuilder(inner).UseBursar().UseDistributedCache(cache).Build(host.Services));
        Assert.Contains("UseDistributedCache() before UseBursar()", cached.Message);
        // the right order builds
        Assert.NotNull(new ChatClientBuilder(inner).UseDistributedCache(cache).UseFunctionInvocation().UseBursar().Build(host.Services));
        var missing = Assert.Throws<InvalidOperationException>(() => new ChatClientBuilder(inner).UseBursar().Build());
        Assert.Contains("services.AddBursar()", missing.Message);
    }

    /// <summary>
    /// A client that answers at once reuses one call object for the calls made one after another on a thread (the
    /// library's per-call state is pooled): a refusal, a cache hit and a routed answer must not leak into the next call.
    /// </summary>
    [Fact]
    public async Task Calls_one_after_another_each_leave_their_own_row_when_the_library_reuses_its_call_state()
    {
        await using var host = new LibraryHost();
        await host.AddBudgetAsync(BudgetScope.Customer, "tiny", 0.000001m);
        var inner = new InstantClient();
        var client = new ChatClientBuilder(inner).UseBursar().Build(host.Services);
        var plain = new ChatOptions { ModelId = "gpt-4o-mini", AdditionalProperties = new() { ["bursar.feature"] = "seq-a" } };

        // synchronously completing calls on one thread: each Task is already done when GetResponseAsync returns
        var refused = client.GetResponseAsync("Write an essay.", new ChatOptions { ModelId = "gpt-4o", AdditionalProperties = new() { ["bursar.feature"] = "seq-refused", ["bursar.customer"] = "tiny" } });
        var first = client.GetResponseAsync("What is 2+2?", new ChatOptions { ModelId = "gpt-4o-mini", Temperature = 0, AdditionalProperties = new() { ["bursar.feature"] = "seq-cached" } });
        var hit = client.GetResponseAsync("What is 2+2?", new ChatOptions { ModelId = "gpt-4o-mini", Temperature = 0, AdditionalProperties = new() { ["bursar.feature"] = "seq-cached" } });
        var served = client.GetResponseAsync("Hello", plain);
        Assert.All(new Task[] { refused, first, hit, served }, t => Assert.True(t.IsCompleted));

        await Assert.ThrowsAsync<BudgetExceededException>(() => refused);
        Assert.Equal("answer 1", (await first).Text);
        Assert.Equal("answer 1", (await hit).Text); // the cached answer, not a third call
        Assert.Equal("answer 2", (await served).Text);
        Assert.Equal(2, inner.Calls);

        var r = Assert.Single(await host.LedgerAsync("seq-refused"));
        Assert.Equal(("refused", 0m, "gpt-4o"), (r.Outcome, r.Cost, r.RequestedModel));
        var cached = await host.LedgerAsync("seq-cached", 2);
        Assert.Equal(("ok", "instant"), (cached[0].Outcome, cached[0].Provider));
        Assert.Equal(("ok", "bursar-cache", 0m), (cached[1].Outcome, cached[1].Provider, cached[1].Cost));
        var a = Assert.Single(await host.LedgerAsync("seq-a"));
        Assert.Equal(("ok", "instant", "gpt-4o-mini", 0m), (a.Outcome, a.Provider, a.ServedModel, a.SavingResponseCache));
        Assert.Equal((7L, 2L), (a.InputTokens, a.OutputTokens));
        Assert.True(a.Cost > 0);
        Assert.Equal(4, new[] { r.Id, cached[0].Id, cached[1].Id, a.Id }.Distinct().Count());
    }

    [Fact]
    public async Task A_call_without_a_model_fails_its_task_and_says_how_to_name_one()
    {
        await using var host = new LibraryHost();
        var client = new ChatClientBuilder(new InstantClient(defaultModel: null)).UseBursar().Build(host.Services);
        var pending = client.GetResponseAsync("Hello"); // does not throw here: the task carries the error, as an async method's would
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => pending);
        Assert.Contains("ChatOptions.ModelId", e.Message);
    }

    /// <summary>Answers at once (a completed task), numbering its answers.</summary>
    private sealed class InstantClient(string? defaultModel = "gpt-4o-mini") : IChatClient
    {
        public int Calls;

        public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
        {
            var n = Interlocked.Increment(ref Calls);
            return Task.FromResult(new ChatResponse(new ChatMessage(ChatRole.Assistant, $"answer {n}"))
            {
                ModelId = options?.ModelId, FinishReason = ChatFinishReason.Stop, ResponseId = $"r{n}",
                Usage = new UsageDetails { InputTokenCount = 7, OutputTokenCount = 2, TotalTokenCount = 9 },
            });
        }

        public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public object? GetService(Type serviceType, object? serviceKey = null) =>
            serviceType == typeof(ChatClientMetadata) ? new ChatClientMetadata("instant", null, defaultModel) : null;

        public void Dispose() { }
    }
}
