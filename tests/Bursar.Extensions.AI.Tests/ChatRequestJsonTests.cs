using System.Buffers;
using System.Text.Json;
using Bursar.Providers.Dialects;
using Microsoft.Extensions.AI;

namespace Bursar.Extensions.AI.Tests;

/// <summary>
/// The library writes each call as its OpenAI body and counts the prompt while writing it; those counts must be what the
/// gateway's scan reads from the same body, or a budget would reserve differently for the same call through each face.
/// </summary>
public sealed class ChatRequestJsonTests
{
    public static TheoryData<string> Calls() => [.. Cases.Keys];

    private static readonly Dictionary<string, (List<ChatMessage> Messages, ChatOptions? Options)> Cases = new()
    {
        ["plain"] = ([new(ChatRole.System, "You are terse."), new(ChatRole.User, "What is the capital of France?")], new ChatOptions { MaxOutputTokens = 256 }),
        ["no options"] = ([new(ChatRole.User, "hi")], null),
        ["instructions, temperature 0, stream"] = ([new(ChatRole.User, "Summarise: the quick brown fox.")], new ChatOptions { Instructions = "Be brief.", Temperature = 0f }),
        ["top_k 1"] = ([new(ChatRole.User, "pick one")], new ChatOptions { TopK = 1, Temperature = 0.7f }),
        ["every script, escapes and emoji"] = ([
            new(ChatRole.User, "日本語で答えてください。東京の天気は？"),
            new(ChatRole.Assistant, "مرحبا بالعالم — «quotes» \"escaped\" \\ back\\slash\n\ttabs 👩‍💻🇫🇷"),
            new(ChatRole.User, "Привет, как дела? Ελληνικά, עברית, हिन्दी, 한국어, ไทย </script>&<'"),
        ], new ChatOptions { MaxOutputTokens = 10, StopSequences = ["\n\n", "END"] }),
        ["multi-part text and images"] = ([
            new(ChatRole.User, [new TextContent("What is in these?"), new DataContent(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 }, "image/png"), new UriContent(new Uri("https://example.com/cat.jpg"), "image/jpeg"), new TextContent("and this")]),
        ], new ChatOptions { Seed = 7 }),
        ["tool call and results"] = ([
            new(ChatRole.User, "Weather in Oslo and Lisbon?"),
            new(ChatRole.Assistant, [new FunctionCallContent("call_1", "get_weather", new Dictionary<string, object?> { ["city"] = "Oslo" }), new FunctionCallContent("call_2", "get_weather", null)]),
            new(ChatRole.Tool, [new FunctionResultContent("call_1", "Oslo: 18°C, light rain"), new FunctionResultContent("call_2", JsonDocument.Parse("{\"c\":21,\"sky\":\"sun\"}").RootElement), new FunctionResultContent("call_3", null), new FunctionResultContent("call_4", new[] { 1, 2 })]),
        ], new ChatOptions { MaxOutputTokens = 300 }),
        ["empty message"] = ([new(ChatRole.User, [])], new ChatOptions()),
    };

    [Theory]
    [MemberData(nameof(Calls))]
    public void The_counts_written_with_the_body_are_what_the_gateway_s_scan_reads_from_it(string name)
    {
        var (messages, options) = Cases[name];
        foreach (var stream in new[] { false, true })
        {
            var body = new ArrayBufferWriter<byte>();
            var written = ChatRequestJson.Write(messages, options, "gpt-4o-mini", stream, body);
            var scanned = RequestScan.Run(body.WrittenSpan, Dialect.OpenAI);
            Assert.Null(scanned.Error);
            Assert.Equal(scanned.EstimatedInputTokens, written.EstimatedInputTokens);
            Assert.Equal(scanned.InputTokenBound, written.InputTokenBound);
            Assert.Equal(scanned.MaxTokens, written.MaxTokens);
            Assert.Equal(scanned.Deterministic, written.Deterministic);
            Assert.Equal(scanned.Choices, written.Choices);
            Assert.Equal(scanned.Stream, written.Stream);
            Assert.Equal(scanned.Model, written.Model);
        }
    }

    [Fact]
    public void A_call_with_tools_is_scanned_so_its_schemas_count()
    {
        var weather = AIFunctionFactory.Create((string city) => city, "get_weather", "Today's weather in a city");
        var body = new ArrayBufferWriter<byte>();
        var written = ChatRequestJson.Write([new(ChatRole.User, "Oslo?")], new ChatOptions { Tools = [weather] }, "gpt-4o-mini", false, body);
        var withoutTools = ChatRequestJson.Write([new(ChatRole.User, "Oslo?")], null, "gpt-4o-mini", false, new ArrayBufferWriter<byte>());
        Assert.Equal(RequestScan.Run(body.WrittenSpan, Dialect.OpenAI).InputTokenBound, written.InputTokenBound);
        Assert.True(written.InputTokenBound > withoutTools.InputTokenBound + "Today's weather in a city".Length, "the tool's description and schema count toward the bound");
    }
}
