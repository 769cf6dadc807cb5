using System.ClientModel;
using System.ClientModel.Primitives;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;

namespace Bursar.Gateway.Tests;

/// <summary>The official OpenAI .NET SDK, pointed at Bursar, gets correct answers and usage; every call lands in the ledger at its exact cost.</summary>
[Collection(GatewayCollection.Name)]
public sealed class OpenAISdkTests(GatewayFixture gw)
{
    private static readonly PriceCatalog Catalog = new(PriceFiles.LoadBuiltIn());

    private ChatClient Client(string model, string feature)
    {
        var options = new OpenAIClientOptions { Endpoint = new Uri(gw.BaseUrl + "/v1"), NetworkTimeout = TimeSpan.FromSeconds(30) };
        options.AddPolicy(new HeaderPolicy("x-bursar-feature", feature), PipelinePosition.PerCall);
        return new ChatClient(model, new ApiKeyCredential(gw.Key), options);
    }

    private static decimal Expected(string model, ChatTokenUsage u) =>
        CostCalculator.Compute(Catalog.Find(model).Price!, TokenUsage.FromOpenAI(u.InputTokenCount, u.InputTokenDetails?.CachedTokenCount ?? 0, u.OutputTokenCount, u.OutputTokenDetails?.ReasoningTokenCount ?? 0)).Total;

    [Fact]
    public async Task Plain_call_returns_text_usage_and_one_priced_ledger_record()
    {
        ChatCompletion c = await Client("gpt-4o-mini", "oa-plain").CompleteChatAsync([new UserChatMessage("Say hello")]);
        Assert.False(string.IsNullOrWhiteSpace(c.Content[0].Text));
        Assert.True(c.Usage.InputTokenCount > 0 && c.Usage.OutputTokenCount > 0);
        var r = Assert.Single(await gw.LedgerAsync("oa-plain"));
        Assert.Equal((c.Usage.InputTokenCount, c.Usage.OutputTokenCount), ((int)r.InputTokens, (int)r.OutputTokens));
        Assert.True(r.Priced);
        Assert.Equal(Expected("gpt-4o-mini", c.Usage), r.Cost);
        Assert.Equal((c.Usage.InputTokenCount * 0.15m + c.Usage.OutputTokenCount * 0.60m) / 1_000_000m, r.Cost);
        Assert.Equal("ok", r.Outcome);
        Assert.False(r.Streamed);
        Assert.Equal("openai (simulator)", r.Provider);
    }

    [Fact]
    public async Task Streaming_call_assembles_text_and_meters_the_usage_chunk()
    {
        var text = new System.Text.StringBuilder();
        ChatTokenUsage? usage = null;
        await foreach (var u in Client("gpt-4.1", "oa-stream").CompleteChatStreamingAsync([new UserChatMessage("Stream please")]))
        {
            foreach (var part in u.ContentUpdate) text.Append(part.Text);
            usage ??= u.Usage;
        }
        Assert.True(text.Length > 10);
        Assert.NotNull(usage);
        var r = Assert.Single(await gw.LedgerAsync("oa-stream"));
        Assert.True(r.Streamed);
        Assert.Equal(usage!.OutputTokenCount, r.OutputTokens);
        Assert.Equal(Expected("gpt-4.1", usage), r.Cost);
        Assert.NotNull(r.TimeToFirstTokenMs);
    }

    [Fact]
    public async Task Tool_calls_round_trip()
    {
        var client = Client("gpt-4o", "oa-tools");
        var tool = ChatTool.CreateFunctionTool("get_weather", "Weather for a city",
            BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"""));
        var options = new ChatCompletionOptions { Tools = { tool } };
        List<OpenAI.Chat.ChatMessage> messages = [new UserChatMessage("Weather in Paris?")];
        ChatCompletion first = await client.CompleteChatAsync(messages, options);
        Assert.Equal(OpenAI.Chat.ChatFinishReason.ToolCalls, first.FinishReason);
        var call = Assert.Single(first.ToolCalls);
        Assert.Equal("get_weather", call.FunctionName);
        Assert.Contains("Paris", call.FunctionArguments.ToString());
        messages.Add(new AssistantChatMessage(first));
        messages.Add(new ToolChatMessage(call.Id, "18C and sunny"));
        ChatCompletion second = await client.CompleteChatAsync(messages, options);
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Stop, second.FinishReason);
        Assert.Contains("18C and sunny", second.Content[0].Text);
        Assert.Equal(2, (await gw.LedgerAsync("oa-tools", 2)).Count);
    }

    [Fact]
    public async Task A_claude_model_through_the_openai_sdk_is_translated_both_ways()
    {
        ChatCompletion c = await Client("claude-haiku-4-5", "oa-cross").CompleteChatAsync([new SystemChatMessage("Be brief."), new UserChatMessage("Hi Claude")]);
        Assert.False(string.IsNullOrWhiteSpace(c.Content[0].Text));
        Assert.True(c.Usage.OutputTokenCount > 0);
        var text = new System.Text.StringBuilder();
        ChatTokenUsage? usage = null;
        await foreach (var u in Client("claude-haiku-4-5", "oa-cross").CompleteChatStreamingAsync([new UserChatMessage("Hi again")]))
        {
            foreach (var part in u.ContentUpdate) text.Append(part.Text);
            usage ??= u.Usage;
        }
        Assert.True(text.Length > 0);
        Assert.NotNull(usage);
        var rows = await gw.LedgerAsync("oa-cross", 2);
        Assert.All(rows, r => Assert.Equal("anthropic (simulator)", r.Provider));
        Assert.All(rows, r => Assert.Equal("openai", r.Dialect));
        Assert.All(rows, r => Assert.True(r.Cost > 0));
    }

    [Fact]
    public async Task Microsoft_Extensions_AI_chat_client_works_through_the_gateway()
    {
        IChatClient chat = Client("gpt-4o-mini", "meai").AsIChatClient();
        var response = await chat.GetResponseAsync("Hello from M.E.AI");
        Assert.False(string.IsNullOrWhiteSpace(response.Text));
        Assert.True(response.Usage?.InputTokenCount > 0);
        var streamed = new System.Text.StringBuilder();
        await foreach (var update in chat.GetStreamingResponseAsync("And streamed")) streamed.Append(update.Text);
        Assert.True(streamed.Length > 0);
        Assert.Equal(2, (await gw.LedgerAsync("meai", 2)).Count);
    }

    [Fact]
    public async Task A_bad_key_is_an_authentication_error_in_openai_shape()
    {
        var client = new ChatClient("gpt-4o-mini", new ApiKeyCredential("bsr_wrong"), new OpenAIClientOptions { Endpoint = new Uri(gw.BaseUrl + "/v1") });
        var e = await Assert.ThrowsAsync<ClientResultException>(() => client.CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(401, e.Status);
        Assert.Contains("Invalid Bursar virtual key", e.Message);
    }
}
