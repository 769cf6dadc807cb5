using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;
using OpenAI;
using OpenAI.Embeddings;
using OpenAI.Responses;

namespace Bursar.Gateway.Tests;

/// <summary>The official OpenAI .NET SDK's Responses and embedding clients, unchanged, against the gateway: answers, usage and one exactly priced ledger record per call.</summary>
[Collection(GatewayCollection.Name)]
public sealed class ResponsesSdkTests(GatewayFixture gw)
{
    private static readonly PriceCatalog Catalog = new(PriceFiles.LoadBuiltIn());

    private OpenAIClientOptions Options(string feature)
    {
        var options = new OpenAIClientOptions { Endpoint = new Uri(gw.BaseUrl + "/v1"), NetworkTimeout = TimeSpan.FromSeconds(30) };
        options.AddPolicy(new HeaderPolicy("x-bursar-feature", feature), PipelinePosition.PerCall);
        return options;
    }

#pragma warning disable OPENAI001 // the Responses client is marked experimental
    private ResponsesClient Client(string feature) =>
        new OpenAIClient(new ApiKeyCredential(gw.Key), Options(feature)).GetResponsesClient();

    private static decimal Expected(string model, ResponseTokenUsage u) =>
        CostCalculator.Compute(Catalog.Find(model).Price!, TokenUsage.FromOpenAI(u.InputTokenCount, u.InputTokenDetails?.CachedTokenCount ?? 0, u.OutputTokenCount, u.OutputTokenDetails?.ReasoningTokenCount ?? 0)).Total;

    [Fact]
    public async Task Responses_plain_call_returns_text_usage_and_one_priced_ledger_record()
    {
        ResponseResult r = await Client("rs-plain").CreateResponseAsync("gpt-4o-mini", "Say hello", previousResponseId: null);
        Assert.False(string.IsNullOrWhiteSpace(r.GetOutputText()));
        var row = Assert.Single(await gw.LedgerAsync("rs-plain"));
        Assert.Equal("openai-responses", row.Dialect);
        Assert.Equal(r.Usage.InputTokenCount, row.InputTokens + row.CacheReadTokens);
        Assert.Equal(r.Usage.OutputTokenCount, row.OutputTokens);
        Assert.True(row.Priced);
        Assert.Equal(Expected("gpt-4o-mini", r.Usage), row.Cost);
        Assert.Equal((r.Usage.InputTokenCount * 0.15m + r.Usage.OutputTokenCount * 0.60m) / 1_000_000m, row.Cost);
        Assert.Equal("ok", row.Outcome);
        Assert.False(row.Streamed);
    }

    [Fact]
    public async Task Responses_stream_meters_the_usage_of_response_completed()
    {
        var text = new StringBuilder();
        ResponseResult? completed = null;
        var options = new CreateResponseOptions("gpt-4.1", [ResponseItem.CreateUserMessageItem("Stream please")]) { StreamingEnabled = true };
        await foreach (var u in await Client("rs-stream").CreateResponseStreamingAsync(options))
        {
            if (u is StreamingResponseOutputTextDeltaUpdate d) text.Append(d.Delta);
            if (u is StreamingResponseCompletedUpdate c) completed = c.Response;
        }
        Assert.True(text.Length > 10);
        Assert.NotNull(completed);
        Assert.Equal(completed!.GetOutputText(), text.ToString());
        var row = Assert.Single(await gw.LedgerAsync("rs-stream"));
        Assert.True(row.Streamed);
        Assert.False(row.UsageEstimated);
        Assert.Equal(completed.Usage.OutputTokenCount, row.OutputTokens);
        Assert.Equal(Expected("gpt-4.1", completed.Usage), row.Cost);
        Assert.NotNull(row.TimeToFirstTokenMs);
    }

    [Fact]
    public async Task Responses_function_tools_round_trip_through_a_chain()
    {
        var client = Client("rs-tools");
        var tool = ResponseTool.CreateFunctionTool("get_weather", BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"""), strictModeEnabled: false, functionDescription: "Weather for a city");
        var first = new CreateResponseOptions("gpt-4o", [ResponseItem.CreateUserMessageItem("Weather in Paris?")]) { Tools = { tool } };
        ResponseResult r1 = await client.CreateResponseAsync(first);
        var call = Assert.IsType<FunctionCallResponseItem>(Assert.Single(r1.OutputItems));
        Assert.Equal("get_weather", call.FunctionName);
        Assert.Contains("Paris", call.FunctionArguments.ToString());
        var second = new CreateResponseOptions("gpt-4o", [ResponseItem.CreateFunctionCallOutputItem(call.CallId, "18C and sunny")]) { Tools = { tool }, PreviousResponseId = r1.Id };
        ResponseResult r2 = await client.CreateResponseAsync(second);
        Assert.Contains("18C and sunny", r2.GetOutputText());
        var rows = await gw.LedgerAsync("rs-tools", 2);
        Assert.Equal(2, rows.Count);
        Assert.Equal("tool_calls", rows.OrderBy(r => r.Timestamp).First().FinishReason);
    }

    [Fact]
    public async Task A_previous_response_id_chain_is_a_run_under_the_run_caps_and_its_stored_context_is_billed_as_cached_input()
    {
        var client = Client("rs-chain");
        var words = string.Join(" ", Enumerable.Range(0, 400).Select(i => $"policy clause {i} applies"));
        ResponseResult r1 = await client.CreateResponseAsync("gpt-4o", words, previousResponseId: null);
        ResponseResult r2 = await client.CreateResponseAsync("gpt-4o", "Summarize the clauses above.", previousResponseId: r1.Id);
        Assert.True(r2.Usage.InputTokenCount > r1.Usage.InputTokenCount + r1.Usage.OutputTokenCount);
        Assert.True(r2.Usage.InputTokenDetails.CachedTokenCount >= 1024);
        // the fixture's runs end when the model answers without a tool call: the chain's next call is refused as its run's
        var e = await Assert.ThrowsAsync<ClientResultException>(() => client.CreateResponseAsync("gpt-4o", "And the last one?", previousResponseId: r2.Id));
        Assert.Equal(429, e.Status);
        Assert.Contains("resp:" + r1.Id, e.Message);
        var rows = (await gw.LedgerAsync("rs-chain", 3)).OrderBy(r => r.Timestamp).ToArray();
        Assert.Null(rows[0].RunId);
        Assert.Equal("resp:" + r1.Id, rows[1].RunId);
        Assert.Equal("resp:" + r1.Id, rows[2].RunId); // the chain's first response names the run, however long it grows
        Assert.Equal("refused", rows[2].Outcome);
        Assert.Equal(r2.Usage.InputTokenDetails.CachedTokenCount, rows[1].CacheReadTokens);
        Assert.Equal(Expected("gpt-4o", r2.Usage), rows[1].Cost);
    }

    [Fact]
    public async Task Stored_responses_are_read_listed_and_deleted_through_the_gateway_and_hidden_from_other_tenants()
    {
        var client = Client("rs-stored");
        ResponseResult r = await client.CreateResponseAsync("gpt-4o-mini", "Remember this", previousResponseId: null);
        ResponseResult got = await client.GetResponseAsync(r.Id);
        Assert.Equal(r.GetOutputText(), got.GetOutputText());
        var items = new List<ResponseItem>();
        await foreach (var item in client.GetResponseInputItemsAsync(r.Id)) items.Add(item);
        Assert.IsAssignableFrom<MessageResponseItem>(Assert.Single(items));

        var other = await gw.CreateKeyAsync(team: "rs-other-team");
        using (var req = new HttpRequestMessage(HttpMethod.Get, $"/v1/responses/{r.Id}"))
        {
            req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", other);
            using var resp = await gw.Http.SendAsync(req);
            Assert.Equal(404, (int)resp.StatusCode);
            Assert.Contains("not found", JsonNode.Parse(await resp.Content.ReadAsStringAsync())!["error"]!["message"]!.GetValue<string>());
        }
        using (var req = gw.Post("/v1/responses", $$"""{"model":"gpt-4o-mini","input":"continue","previous_response_id":"{{r.Id}}"}""", key: other))
        {
            using var resp = await gw.Http.SendAsync(req);
            Assert.Equal(400, (int)resp.StatusCode);
            Assert.Equal("previous_response_id", JsonNode.Parse(await resp.Content.ReadAsStringAsync())!["error"]!["param"]!.GetValue<string>());
        }

        var deleted = await client.DeleteResponseAsync(r.Id);
        Assert.True(deleted.Value.Deleted);
        await Assert.ThrowsAsync<ClientResultException>(() => client.GetResponseAsync(r.Id));
    }

    [Fact]
    public async Task Embeddings_are_metered_at_the_input_rate_and_an_identical_request_is_an_exact_cache_hit()
    {
        var client = new EmbeddingClient("text-embedding-3-small", new ApiKeyCredential(gw.Key), Options("emb-sdk"));
        OpenAIEmbeddingCollection result = await client.GenerateEmbeddingsAsync(["How do I reset my password?", "What are your hours?"]);
        Assert.Equal(2, result.Count);
        Assert.True(result[0].ToFloats().Length > 0);
        var row = Assert.Single(await gw.LedgerAsync("emb-sdk"));
        Assert.Equal("openai-embeddings", row.Dialect);
        Assert.Equal(result.Usage.InputTokenCount, row.InputTokens);
        Assert.Equal(0, row.OutputTokens);
        Assert.True(row.Priced);
        Assert.Equal(result.Usage.InputTokenCount * 0.02m / 1_000_000m, row.Cost);

        const string body = """{"model":"text-embedding-3-small","input":"cache me exactly"}""";
        using var a = await gw.Http.SendAsync(gw.Post("/v1/embeddings", body, feature: "emb-cache"));
        using var b = await gw.Http.SendAsync(gw.Post("/v1/embeddings", body, feature: "emb-cache"));
        Assert.Equal(200, (int)b.StatusCode);
        Assert.Equal("hit", b.Headers.GetValues("x-bursar-cache").Single());
        Assert.Equal(await a.Content.ReadAsStringAsync(), await b.Content.ReadAsStringAsync());
        var rows = (await gw.LedgerAsync("emb-cache", 2)).OrderBy(r => r.Timestamp).ToArray();
        Assert.Equal(0m, rows[1].Cost);
        Assert.Equal(rows[0].Cost, rows[1].SavingResponseCache);
    }

    [Fact]
    public async Task An_embedding_model_without_a_price_is_recorded_unpriced_never_at_zero()
    {
        using var resp = await gw.Http.SendAsync(gw.Post("/v1/embeddings", """{"model":"gpt-unpriced-x","input":"no price for me"}""", feature: "emb-unpriced"));
        Assert.Equal(200, (int)resp.StatusCode);
        var row = Assert.Single(await gw.LedgerAsync("emb-unpriced"));
        Assert.False(row.Priced);
        Assert.Null(row.Cost);
        Assert.True(row.InputTokens > 0);
    }

    [Fact]
    public async Task A_claude_model_answers_a_responses_caller_as_the_responses_api_and_bursar_keeps_the_chain()
    {
        var client = Client("rs-claude");
        ResponseResult r1 = await client.CreateResponseAsync(new CreateResponseOptions("claude-haiku-4-5", [ResponseItem.CreateUserMessageItem("Say hello")]) { Instructions = "Be brief." });
        Assert.StartsWith("resp_", r1.Id);
        Assert.False(string.IsNullOrWhiteSpace(r1.GetOutputText()));
        Assert.True(r1.Usage.InputTokenCount > 0 && r1.Usage.OutputTokenCount > 0);
        ResponseResult r2 = await client.CreateResponseAsync("claude-haiku-4-5", "And again?", previousResponseId: r1.Id);
        Assert.True(r2.Usage.InputTokenCount > r1.Usage.InputTokenCount); // the kept conversation went to Claude again
        Assert.Equal(r1.GetOutputText(), (await client.GetResponseAsync(r1.Id)).Value.GetOutputText());
        var items = new List<ResponseItem>();
        await foreach (var item in client.GetResponseInputItemsAsync(r2.Id)) items.Add(item);
        Assert.Single(items);
        Assert.True((await client.DeleteResponseAsync(r1.Id)).Value.Deleted);
        await Assert.ThrowsAsync<ClientResultException>(() => client.GetResponseAsync(r1.Id));

        var rows = (await gw.LedgerAsync("rs-claude", 2)).OrderBy(r => r.Timestamp).ToArray();
        Assert.All(rows, r => Assert.StartsWith("anthropic", r.Provider));
        Assert.Equal("resp:" + r1.Id, rows[1].RunId);
        var price = Catalog.Find("claude-haiku-4-5").Price!;
        Assert.Equal(CostCalculator.Compute(price, new TokenUsage(rows[1].InputTokens, rows[1].CacheReadTokens, rows[1].CacheWrite5mTokens, rows[1].CacheWrite1hTokens, rows[1].OutputTokens)).Total, rows[1].Cost);
        Assert.Equal(r2.Usage.InputTokenCount, rows[1].InputTokens + rows[1].CacheReadTokens + rows[1].CacheWrite5mTokens + rows[1].CacheWrite1hTokens);
    }

    [Fact]
    public async Task A_claude_model_streams_responses_events_and_runs_function_tools_through_a_kept_chain()
    {
        var client = Client("rs-claude-stream");
        var tool = ResponseTool.CreateFunctionTool("get_weather", BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"""), strictModeEnabled: false, functionDescription: "Weather for a city");
        var first = new CreateResponseOptions("claude-sonnet-4-5", [ResponseItem.CreateUserMessageItem("Weather in Paris?")]) { Tools = { tool }, StreamingEnabled = true };
        ResponseResult? r1 = null;
        var args = new StringBuilder();
        await foreach (var u in await client.CreateResponseStreamingAsync(first))
        {
            if (u is StreamingResponseFunctionCallArgumentsDeltaUpdate d) args.Append(d.Delta);
            if (u is StreamingResponseCompletedUpdate c) r1 = c.Response;
        }
        Assert.NotNull(r1);
        var call = Assert.IsType<FunctionCallResponseItem>(r1!.OutputItems.Single(i => i is FunctionCallResponseItem));
        Assert.Equal("get_weather", call.FunctionName);
        Assert.Equal(call.FunctionArguments.ToString(), args.ToString());
        Assert.True(r1.Usage.OutputTokenCount > 0);
        var second = new CreateResponseOptions("claude-sonnet-4-5", [ResponseItem.CreateFunctionCallOutputItem(call.CallId, "18C and sunny")]) { Tools = { tool }, PreviousResponseId = r1.Id, StreamingEnabled = true };
        var text = new StringBuilder();
        await foreach (var u in await client.CreateResponseStreamingAsync(second))
            if (u is StreamingResponseOutputTextDeltaUpdate d) text.Append(d.Delta);
        Assert.Contains("18C and sunny", text.ToString());
        var rows = await gw.LedgerAsync("rs-claude-stream", 2);
        Assert.All(rows, r => { Assert.True(r.Streamed); Assert.False(r.UsageEstimated); Assert.True(r.Cost > 0); });
    }

    [Theory]
    [InlineData("""{"model":"claude-haiku-4-5","input":"x","tools":[{"type":"web_search"}]}""", "tools[0].type")]
    [InlineData("""{"model":"claude-haiku-4-5","input":"x","tools":[{"type":"file_search","vector_store_ids":["vs_1"]}]}""", "tools[0].type")]
    [InlineData("""{"model":"claude-haiku-4-5","input":"x","text":{"format":{"type":"json_object"}}}""", "text.format.type")]
    [InlineData("""{"model":"claude-haiku-4-5","input":"x","previous_response_id":"resp_held_by_openai"}""", "previous_response_id")]
    [InlineData("""{"model":"claude-haiku-4-5","input":[{"role":"user","content":[{"type":"input_image","file_id":"file_1"}]}]}""", "input[0].content[0].file_id")]
    public async Task What_claude_cannot_run_or_express_is_a_400_naming_the_field(string json, string param)
    {
        using var resp = await gw.Http.SendAsync(gw.Post("/v1/responses", json, feature: "rs-claude-bad"));
        Assert.Equal(400, (int)resp.StatusCode);
        Assert.Equal(param, JsonNode.Parse(await resp.Content.ReadAsStringAsync())!["error"]!["param"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("/v1/responses", """{"model":5,"input":"x"}""", "model")]
    [InlineData("/v1/responses", """{"model":"gpt-4o"}""", "input")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":7}""", "input")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":[1]}""", "input[0]")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":"x","max_output_tokens":"many"}""", "max_output_tokens")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":"x","stream":"yes"}""", "stream")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":"x","instructions":{}}""", "instructions")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":"x","previous_response_id":42}""", "previous_response_id")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":"x","tools":{}}""", "tools")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":"x","input":"y"}""", "input")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","messages":[]}""", "messages")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":"x","store":"no"}""", "store")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":[{"role":"robot","content":"x"}]}""", "input[0].role")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":"x","text":{"format":{"type":"json_schema","schema":{}}}}""", "text.format.name")]
    [InlineData("/v1/embeddings", """{"model":"text-embedding-3-small"}""", "input")]
    [InlineData("/v1/embeddings", """{"model":"text-embedding-3-small","input":{}}""", "input")]
    [InlineData("/v1/embeddings", """{"model":"text-embedding-3-small","input":[{}]}""", "input[0]")]
    [InlineData("/v1/embeddings", """{"model":"text-embedding-3-small","input":["ok",""]}""", "input[1]")]
    public async Task Malformed_bodies_get_an_openai_400_naming_the_field(string path, string json, string param)
    {
        using var resp = await gw.Http.SendAsync(gw.Post(path, json, feature: "rs-bad"));
        Assert.Equal(400, (int)resp.StatusCode);
        var error = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!["error"]!;
        Assert.Equal("invalid_request_error", error["type"]!.GetValue<string>());
        Assert.Equal(param, error["param"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("/v1/responses", "{")]
    [InlineData("/v1/responses", "[]")]
    [InlineData("/v1/responses", "")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":"\ud800"}""")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":[{"type":"message","role":"user","content":[{"type":"input_text"}]}]}""")]
    [InlineData("/v1/responses", """{"model":"gpt-4o","input":[{"type":"function_call_output"}]}""")]
    [InlineData("/v1/embeddings", "{")]
    [InlineData("/v1/embeddings", """{"model":"text-embedding-3-small","input":[[1,"a"]]}""")]
    public async Task Hostile_bodies_never_get_a_500(string path, string json)
    {
        using var resp = await gw.Http.SendAsync(gw.Post(path, json, feature: "rs-hostile"));
        Assert.Equal(400, (int)resp.StatusCode);
        Assert.NotNull(JsonNode.Parse(await resp.Content.ReadAsStringAsync())!["error"]!["message"]);
    }
#pragma warning restore OPENAI001
}
