using System.Text.Json.Nodes;
using Bursar.Core.Context;
using Bursar.Core.Ledger;
using Bursar.Core.Pipeline;
using Bursar.Core.Routing;
using Bursar.Core.Tokens;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging.Abstractions;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>The context stage's document compression: HTML to text, whitespace, base64, repeated edges; off unless opted in.</summary>
public sealed class DocumentCompressionStageTests
{
    /// <summary>Retrieval's encoder in these tests: the semantic cache's local hashed n-gram generator.</summary>
    internal static readonly TurnEmbeddings LocalEmbeddings = new(() => new Bursar.Core.Caching.Semantic.HashedNGramEmbeddingGenerator());

    internal static ContextStage Stage(DocumentCompressionOptions? options = null, IConversationSummarizer? summarizer = null, SummaryStore? store = null, TurnEmbeddings? embeddings = null) =>
        new(new DocumentCompressor(options ?? new DocumentCompressionOptions { MinChars = 200 }), new Compactor(TokenCounter.Default), TokenCounter.Default, Levers.Catalog,
            summarizer ?? IConversationSummarizer.None, store ?? new SummaryStore(), NullLogger<ContextStage>.Instance, embeddings ?? LocalEmbeddings);

    private static readonly RoutePolicy Compress = new() { Name = "docs", DocumentCompression = true };

    internal const string Page = """
        <!doctype html><html><head><title>T</title><style>body { color: red; } .x { margin: 0 }</style>
        <script>window.tracking = { id: 12345, send: function () { return 1; } };</script></head>
        <body><nav class="site-nav"><a href="/">Home</a> <a href="/about">About us</a> <a href="/jobs">Careers</a></nav>
        <header id="masthead"><div class="logo">ACME News</div></header>
        <article><h1>Quarterly results</h1>
        <p>Revenue    rose   <b>12%</b> to
           $4.2 billion in the third quarter.</p>
        <ul><li>Cloud grew 30%</li><li>Devices fell 4%</li></ul>
        <table><tr><th>Region</th><th>Revenue</th></tr><tr><td>EMEA</td><td>1.1</td></tr></table>
        <pre>  int x = 1;
            return x;</pre>
        <p style="display:none">hidden tracking pixel text</p>
        </article>
        <footer class="site-footer">Copyright 2026 ACME. All rights reserved. Privacy. Terms. Cookies.</footer>
        <script>var more = "analytics"; for (var i = 0; i < 10; i++) { more += i; }</script>
        </body></html>
        """;

    private static async Task<LeverCall> Run(ContextStage stage, string json, string dialect = "openai", RoutePolicy? policy = null, string? feature = null)
    {
        var call = Levers.Call(json, dialect, policy: policy, key: Levers.Key(feature: feature));
        call.Policy = policy;
        var next = new FakeProvider();
        await stage.InvokeAsync(call, next.Next, default);
        Assert.Equal(1, next.Calls);
        return call;
    }

    internal static JsonObject Edited(LeverCall call, bool anthropic)
    {
        var body = (JsonObject)call.Request.Body.DeepClone();
        call.Edits.ApplyTo(body, new EditTarget(anthropic, call.Model, call, default));
        return (JsonObject)JsonNode.Parse(body.ToJsonString())!;
    }

    [Fact]
    public async Task Off_unless_a_route_or_a_feature_opts_in_and_then_nothing_is_edited()
    {
        var call = await Run(Stage(), Levers.OpenAI("gpt-4o", Page));
        Assert.False(call.Edits.Any);
        Assert.Null(call.Context);
    }

    [Fact]
    public async Task Html_in_a_user_turn_becomes_text_with_scripts_styles_navigation_and_chrome_dropped()
    {
        var call = await Run(Stage(), Levers.OpenAI("gpt-4o", Page, system: "You summarise pages."), policy: Compress);
        Assert.True(call.Edits.Any);
        var body = Edited(call, anthropic: false);
        Assert.Equal("You summarise pages.", body["messages"]![0]!["content"]!.GetValue<string>()); // the system prompt is not a document
        var text = body["messages"]![1]!["content"]!.GetValue<string>();
        Assert.Contains("# Quarterly results", text);
        Assert.Contains("Revenue rose 12% to $4.2 billion in the third quarter.", text); // whitespace collapsed
        Assert.Contains("- Cloud grew 30%", text);
        Assert.Contains("Region | Revenue", text);
        Assert.Contains("EMEA | 1.1", text);
        Assert.Contains("```\n  int x = 1;\n    return x;\n```", text); // preformatted text verbatim, fenced
        foreach (var gone in new[] { "tracking", "analytics", "color: red", "About us", "ACME News", "Copyright", "hidden" }) Assert.DoesNotContain(gone, text);
        Assert.True(call.Context!.CompressionTokensRemoved > 0);
        Assert.Equal(TokenCounter.Default.Count("gpt-4o", Page) - TokenCounter.Default.Count("gpt-4o", text), call.Context.CompressionTokensRemoved);
        Assert.Equal("compress", call.Context.Strategy);
    }

    [Fact]
    public async Task A_feature_opts_in_through_the_options()
    {
        var stage = Stage(new DocumentCompressionOptions { MinChars = 200, Features = ["research"] });
        Assert.True((await Run(stage, Levers.OpenAI("gpt-4o", Page), feature: "research")).Edits.Any);
        Assert.False((await Run(stage, Levers.OpenAI("gpt-4o", Page), feature: "chat")).Edits.Any);
        // a route says no for its calls
        Assert.False((await Run(stage, Levers.OpenAI("gpt-4o", Page), feature: "research", policy: new RoutePolicy { Name = "r", DocumentCompression = false })).Edits.Any);
    }

    [Fact]
    public async Task Anthropic_tool_results_and_text_documents_are_compressed_in_place()
    {
        var json = new JsonObject
        {
            ["model"] = "claude-sonnet-4-5", ["max_tokens"] = 100, ["system"] = "Be brief.",
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = "Fetch the page." },
                new JsonObject { ["role"] = "assistant", ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_use", ["id"] = "tu_1", ["name"] = "fetch", ["input"] = new JsonObject { ["url"] = "https://acme.test" } }) },
                new JsonObject { ["role"] = "user", ["content"] = new JsonArray(
                    new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = "tu_1", ["content"] = Page },
                    new JsonObject { ["type"] = "document", ["source"] = new JsonObject { ["type"] = "text", ["media_type"] = "text/plain", ["data"] = "Notes:     " + new string(' ', 300) + "the    end" } },
                    new JsonObject { ["type"] = "text", ["text"] = "Summarise both." }) }),
        }.ToJsonString();
        var call = await Run(Stage(), json, "anthropic", Compress);
        var body = Edited(call, anthropic: true);
        var blocks = body["messages"]![2]!["content"]!.AsArray();
        Assert.Equal("tu_1", blocks[0]!["tool_use_id"]!.GetValue<string>());
        Assert.StartsWith("# Quarterly results", blocks[0]!["content"]!.GetValue<string>());
        Assert.Equal("Notes: the end", blocks[1]!["source"]!["data"]!.GetValue<string>());
        Assert.Equal("Summarise both.", blocks[2]!["text"]!.GetValue<string>());
        Assert.Equal(2, call.Context!.CompressedDocuments);
    }

    [Fact]
    public void Whitespace_collapses_outside_fenced_code_which_stays_verbatim()
    {
        var text = "Intro   with    spaces\t\there\n\n\n\n```python\ndef f(x):\n    return   x  *  2\n```\nAfter    the fence   ";
        Assert.Equal("Intro with spaces here\n\n```python\ndef f(x):\n    return   x  *  2\n```\nAfter the fence", DocumentCompressor.CollapseWhitespace(text, 256));
    }

    [Fact]
    public void Long_base64_blobs_become_a_stub_naming_their_length_and_ordinary_words_stay()
    {
        var blob = Convert.ToBase64String(Enumerable.Range(0, 600).Select(i => (byte)(i * 7 % 256)).ToArray());
        var text = $"Logo: data:image/png;base64,{blob} end. A_very_long_identifier_without_digits_" + new string('x', 300);
        var stubbed = DocumentCompressor.StubBase64(text, 256);
        Assert.Contains($"[base64 data: {blob.Length} characters removed]", stubbed);
        Assert.DoesNotContain(blob, stubbed);
        Assert.EndsWith(new string('x', 300), stubbed); // no digits: not a blob
    }

    [Fact]
    public void Headers_and_footers_repeated_across_documents_are_removed_after_their_first_appearance()
    {
        string Doc(string body) => $"ACME Intranet | Home | Search\n{body}\n© 2026 ACME Corp. Confidential.";
        var docs = new[] { Doc("First report body."), Doc("Second report body."), "An unrelated note." };
        var result = DocumentCompressor.RemoveRepeatedEdges(docs, 5);
        Assert.Equal(docs[0], result[0]);
        Assert.Equal("Second report body.", result[1]);
        Assert.Same(docs[2], result[2]);
    }

    [Theory]
    [InlineData("<html><body><article><p>Der    Umsatz stieg   um 12 Prozent.</p><p>Überraschend stark.</p></article><script>x()</script></body></html>", "Der Umsatz stieg um 12 Prozent.")]
    [InlineData("<html><body><article><p>売上高は  前年比12%増加しました。</p></article><nav>ホーム</nav></body></html>", "売上高は 前年比12%増加しました。")]
    [InlineData("<html dir=\"rtl\"><body><article><p>ارتفعت   الإيرادات بنسبة 12٪.</p></article></body></html>", "ارتفعت الإيرادات بنسبة 12٪.")]
    [InlineData("<html><body><main><p>Выручка   выросла на 12%.</p></main><footer>Все права защищены</footer></body></html>", "Выручка выросла на 12%.")]
    public void Text_in_every_script_survives(string html, string expected)
    {
        var text = DocumentCompressor.HtmlToText(html);
        Assert.Equal(expected, text.Split('\n')[0]);
        Assert.DoesNotContain("x()", text);
        Assert.DoesNotContain("ホーム", text);
        Assert.DoesNotContain("Все права", text);
    }

    [Fact]
    public void A_page_pasted_after_the_callers_words_keeps_the_words_and_loses_the_markup()
    {
        var text = new DocumentCompressor(new DocumentCompressionOptions { MinChars = 0 }).Compress("Fasse diese Seite zusammen:\n" + Page);
        Assert.StartsWith("Fasse diese Seite zusammen:\n", text);
        Assert.Contains("# Quarterly results", text);
        Assert.DoesNotContain("<article>", text);
    }

    [Fact]
    public void Hostile_pages_are_compressed_in_bounded_time_and_stack()
    {
        var compressor = new DocumentCompressor(new DocumentCompressionOptions { MinChars = 0 });
        // 50,000 nested elements (each looking like chrome), then 20,000 chrome siblings: no stack overflow, no quadratic blow-up
        var deep = "<html><body>" + string.Concat(Enumerable.Repeat("<div class=\"nav\">x", 50_000)) + "deep text" + "</body></html>";
        var sw = System.Diagnostics.Stopwatch.StartNew();
        Assert.Contains("deep text", compressor.Compress(deep));
        var wide = "<html><body><article>" + string.Concat(Enumerable.Range(0, 20_000).Select(i => $"<div class=\"share\"><p>t{i}</p></div>")) + "<p>kept</p></article></body></html>";
        Assert.Contains("kept", compressor.Compress(wide));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), $"{sw.Elapsed}");
        // nesting just under the parse limit still parses (and drops the chrome); the readability pages nest far less
        var nested = "<html><body>" + string.Concat(Enumerable.Repeat("<div>", 1_500)) + "<nav>menu</nav><p>inner text</p></body></html>";
        Assert.InRange(DocumentCompressor.EstimatedDepth(nested), 1_500, DocumentCompressor.MaxParseDepth);
        Assert.Equal("inner text", compressor.Compress(nested));
    }

    [Fact]
    public async Task Documents_that_do_not_shrink_leave_the_call_unedited()
    {
        var call = await Run(Stage(), Levers.OpenAI("gpt-4o", "A short plain question with nothing to compress."), policy: Compress);
        Assert.False(call.Edits.Any);
        Assert.Null(call.Context);
    }

    [Fact]
    public async Task A_body_that_is_not_valid_json_is_left_for_the_provider_call_to_name()
    {
        var call = Levers.Call(Levers.OpenAI("gpt-4o", "hi"), policy: Compress);
        call.Request = new CallRequest(() => throw new System.Text.Json.JsonException("bad")) { Model = "gpt-4o" };
        var next = new FakeProvider();
        await Stage().InvokeAsync(call, next.Next, default);
        Assert.Equal(1, next.Calls);
        Assert.False(call.Edits.Any);
    }

    [Fact]
    public async Task The_library_face_gets_the_same_compressed_text()
    {
        var call = await Run(Stage(), Levers.OpenAI("gpt-4o", Page), policy: Compress);
        var original = new ChatMessage(ChatRole.User, Page);
        var edit = new ChatCallEdit([new ChatMessage(ChatRole.System, "sys"), original], new ChatOptions(), null);
        call.Edits.ApplyTo(edit, new EditTarget(false, "gpt-4o", call, default));
        Assert.Equal("sys", edit.Messages[0].Text);
        Assert.StartsWith("# Quarterly results", edit.Messages[1].Text);
        Assert.Equal(Page, original.Text); // the caller's own message is not changed
    }

    [Theory]
    [InlineData(-1, 256, 5, "MinChars")]
    [InlineData(0, 10, 5, "Base64MinChars")]
    [InlineData(0, 256, 101, "RepeatedEdgeLines")]
    public void Options_are_validated_naming_the_field(int minChars, int base64, int edges, string field)
    {
        var e = Assert.Throws<InvalidOperationException>(() => new DocumentCompressionOptions { MinChars = minChars, Base64MinChars = base64, RepeatedEdgeLines = edges }.Validate());
        Assert.Contains("Bursar:DocumentCompression:" + field, e.Message);
    }
}

/// <summary>The context stage's compaction, in both dialects: what it keeps, what it stubs, and the invariants it never breaks.</summary>
public sealed class CompactionStageTests : IAsyncLifetime
{
    private MeterKit _kit = null!;

    public Task InitializeAsync()
    {
        _kit = new MeterKit();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _kit.DisposeAsync();

    private const string System = "You are an airline agent. Today is 2024-05-15 15:00 EST.";

    private static readonly JsonArray Tools = new(new JsonObject
    {
        ["type"] = "function",
        ["function"] = new JsonObject { ["name"] = "get_reservation_details", ["description"] = "Get a reservation", ["parameters"] = new JsonObject { ["type"] = "object" } },
    });

    /// <summary>A tool result: a reservation with ids, codes and dates, padded like a real one.</summary>
    private static string Result(int i) => new JsonObject
    {
        ["reservation_id"] = $"RES{i:D3}X9", ["origin"] = "JFK", ["destination"] = "SEA", ["flight_number"] = $"HAT{100 + i}", ["date"] = $"2024-05-{10 + i % 18:D2}",
        ["passengers"] = new JsonArray(new JsonObject { ["first_name"] = "Mia", ["last_name"] = "Li", ["dob"] = "1990-04-05" }),
        ["notes"] = string.Join(' ', Enumerable.Repeat("The reservation was made through the website and paid in full with the card on file.", 6)),
    }.ToJsonString();

    /// <summary><paramref name="turns"/> turns in OpenAI chat: the user asks (the first in German, one in Japanese), the agent calls a tool, reads its result, answers.</summary>
    internal static string OpenAIConversation(int turns, string model = "gpt-4o")
    {
        var messages = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = System });
        for (var i = 0; i < turns; i++)
        {
            messages.Add(new JsonObject { ["role"] = "user", ["content"] = Ask(i) });
            if (i == turns - 1) break; // the newest turn: the user has just asked
            messages.Add(new JsonObject
            {
                ["role"] = "assistant", ["content"] = null,
                ["tool_calls"] = new JsonArray(new JsonObject { ["id"] = $"call_{i}", ["type"] = "function", ["function"] = new JsonObject { ["name"] = "get_reservation_details", ["arguments"] = $"{{\"reservation_id\":\"RES{i:D3}X9\"}}" } }),
            });
            messages.Add(new JsonObject { ["role"] = "tool", ["tool_call_id"] = $"call_{i}", ["content"] = Result(i) });
            messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = $"Reservation RES{i:D3}X9 is on flight HAT{100 + i}." });
        }
        return new JsonObject { ["model"] = model, ["messages"] = messages, ["tools"] = Tools.DeepClone(), ["temperature"] = 0 }.ToJsonString();
    }

    internal static string AnthropicConversation(int turns, string model = "claude-sonnet-4-5")
    {
        var messages = new JsonArray();
        for (var i = 0; i < turns; i++)
        {
            messages.Add(new JsonObject { ["role"] = "user", ["content"] = i % 2 == 0 ? Ask(i) : new JsonArray(new JsonObject { ["type"] = "text", ["text"] = Ask(i) }) });
            if (i == turns - 1) break;
            messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = new JsonArray(
                new JsonObject { ["type"] = "text", ["text"] = "Let me look." },
                new JsonObject { ["type"] = "tool_use", ["id"] = $"toolu_{i}", ["name"] = "get_reservation_details", ["input"] = new JsonObject { ["reservation_id"] = $"RES{i:D3}X9" } }) });
            messages.Add(new JsonObject { ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "tool_result", ["tool_use_id"] = $"toolu_{i}", ["content"] = Result(i) }) });
            messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = $"Reservation RES{i:D3}X9 is on flight HAT{100 + i}." }) });
        }
        var tools = new JsonArray(new JsonObject { ["name"] = "get_reservation_details", ["description"] = "Get a reservation", ["input_schema"] = new JsonObject { ["type"] = "object" } });
        return new JsonObject { ["model"] = model, ["max_tokens"] = 512, ["system"] = System, ["tools"] = tools, ["messages"] = messages }.ToJsonString();
    }

    private static string Ask(int i) => i switch
    {
        0 => "Hallo, ich möchte meine Reservierung prüfen.",
        3 => "予約 RES003X9 の詳細を教えてください。",
        _ => $"Please check reservation RES{i:D3}X9 for me.",
    };

    private static CompactionPolicy Policy(string strategy, bool cacheAware = false, int keep = 2) =>
        new() { Strategy = strategy, KeepTurns = keep, TriggerTokens = 500, CacheAware = cacheAware };

    private static async Task<LeverCall> Run(string json, string dialect, CompactionPolicy policy)
    {
        var route = new RoutePolicy { Name = "agent", Compaction = policy };
        var call = Levers.Call(json, dialect, policy: route);
        var next = new FakeProvider();
        await DocumentCompressionStageTests.Stage().InvokeAsync(call, next.Next, default);
        Assert.Equal(1, next.Calls);
        return call;
    }

    public static TheoryData<string, bool> Both => new()
    {
        { CompactionPolicy.PruneToolResults, false }, { CompactionPolicy.PruneToolResults, true }, { CompactionPolicy.SlidingWindow, false }, { CompactionPolicy.SlidingWindow, true },
        { CompactionPolicy.Retrieval, false }, { CompactionPolicy.Retrieval, true },
    };

    [Theory]
    [MemberData(nameof(Both))]
    public async Task Below_the_trigger_or_within_the_kept_turns_the_call_goes_through_byte_for_byte(string strategy, bool anthropic)
    {
        var long_ = anthropic ? AnthropicConversation(8) : OpenAIConversation(8);
        var call = await Run(long_, anthropic ? "anthropic" : "openai", new CompactionPolicy { Strategy = strategy, TriggerTokens = 1_000_000 });
        Assert.False(call.Edits.Any);

        // past the trigger but only as many turns as are kept: the edit changes nothing, so the face sends the caller's bytes
        var short_ = anthropic ? AnthropicConversation(2) : OpenAIConversation(2);
        var few = await Run(short_, anthropic ? "anthropic" : "openai", new CompactionPolicy { Strategy = strategy, KeepTurns = 2, TriggerTokens = 0 });
        var body = (JsonObject)few.Request.Body.DeepClone();
        Assert.False(few.Edits.ApplyTo(body, new EditTarget(anthropic, few.Model, few, default)));
        Assert.Equal(short_, body.ToJsonString());
        Assert.Null(few.Context!.Strategy);
    }

    /// <summary>The call's upstream body after the edits (as bytes, read back), and the caller's.</summary>
    private static (JsonObject Before, JsonObject After) Edited(LeverCall call, bool anthropic)
    {
        var before = (JsonObject)call.Request.Body.DeepClone();
        return (before, DocumentCompressionStageTests.Edited(call, anthropic));
    }

    [Theory]
    [MemberData(nameof(Both))]
    public async Task Compaction_never_touches_the_system_prompt_the_tools_or_the_newest_user_turn_and_stays_valid(string strategy, bool anthropic)
    {
        var json = anthropic ? AnthropicConversation(9) : OpenAIConversation(9);
        var call = await Run(json, anthropic ? "anthropic" : "openai", Policy(strategy));
        Assert.True(call.Edits.Any);
        var (before, after) = Edited(call, anthropic);
        Assert.Equal(before["tools"]!.ToJsonString(), after["tools"]!.ToJsonString());
        if (anthropic) Assert.Equal(System, after["system"]!.GetValue<string>());
        else Assert.Equal(before["messages"]![0]!.ToJsonString(), after["messages"]![0]!.ToJsonString());
        Assert.Equal(before["messages"]!.AsArray()[^1]!.ToJsonString(), after["messages"]!.AsArray()[^1]!.ToJsonString()); // the newest user turn, verbatim
        Assert.True(after["messages"]!.AsArray().Count <= before["messages"]!.AsArray().Count);
        AssertValid(after, anthropic);
        Assert.Equal(strategy, call.Context!.Strategy);
        Assert.True(call.Context.TokensRemoved > 0);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Pruning_stubs_resolved_results_older_than_the_kept_turns_naming_the_tool_and_tokens_and_keeps_the_pairing(bool anthropic)
    {
        var json = anthropic ? AnthropicConversation(6) : OpenAIConversation(6);
        var call = await Run(json, anthropic ? "anthropic" : "openai", Policy(CompactionPolicy.PruneToolResults));
        var (before, after) = Edited(call, anthropic);
        var results = Results(after, anthropic);
        Assert.Equal(5, results.Count); // every call keeps its result: none is split off
        // turns 0..3 are older than the last two kept turns (4 and the newest, 5): their results are stubs
        for (var i = 0; i < 5; i++)
        {
            var text = results[i];
            if (i < 4)
            {
                Assert.StartsWith("[Bursar pruned this get_reservation_details result: ", text);
                Assert.Contains(" tokens removed; it named: ", text);
                Assert.Contains($"RES{i:D3}X9", text); // the identifiers stay nameable
                Assert.Contains($"HAT{100 + i}", text);
            }
            else Assert.Equal(Result(i), text); // the newest result is never pruned
        }
        Assert.Equal(Results(before, anthropic).Take(4).Sum(r => TokenCounter.Default.Count(call.Model, r)) - results.Take(4).Sum(r => TokenCounter.Default.Count(call.Model, r)), call.Context!.TokensRemoved);
        Assert.Equal(4, call.Context.Compacted!.PrunedResults);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_sliding_window_keeps_the_last_turns_verbatim_behind_a_header_that_names_what_was_called(bool anthropic)
    {
        var json = anthropic ? AnthropicConversation(6) : OpenAIConversation(6);
        var call = await Run(json, anthropic ? "anthropic" : "openai", Policy(CompactionPolicy.SlidingWindow));
        var (before, after) = Edited(call, anthropic);
        var kept = after["messages"]!.AsArray();
        var header = anthropic ? kept[0]!["content"]![0]!["text"]!.GetValue<string>() : kept[1]!["content"]!.GetValue<string>();
        Assert.StartsWith("[Earlier conversation, compacted by Bursar: 4 turns]", header);
        Assert.Contains("Hallo, ich möchte meine Reservierung prüfen.", header);
        Assert.Contains("予約 RES003X9 の詳細を教えてください。", header);
        Assert.Contains("get_reservation_details {\"reservation_id\":\"RES002X9\"}", header);
        Assert.Contains("HAT103", header); // a result's identifiers
        // the last two turns (4 and the newest) follow verbatim
        var original = before["messages"]!.AsArray();
        var tail = original.Skip(original.Count - 5).Select(m => m!.ToJsonString()).ToArray();
        var keptTail = kept.Skip(kept.Count - 5).Select(m => m!.ToJsonString()).ToArray();
        if (anthropic) Assert.Equal(tail[1..], keptTail[1..]); // the first kept user turn carries the header as its own first block
        else Assert.Equal(tail, keptTail);
        AssertValid(after, anthropic);
    }

    [Fact]
    public void Identifiers_are_read_from_a_whole_json_document_in_order_each_once_and_none_from_a_broken_one()
    {
        var ids = Compactor.Identifiers(JsonValue.Create("""{"reservation_id":"RES001X9","flights":[{"flight_number":"HAT100","price":180,"cabin":"basic economy"},{"flight_number":"HAT100","date":"2024-05-20"}],"status":"OK","note":"a\u0020b1"}"""));
        Assert.Equal(["RES001X9", "HAT100", "180", "2024-05-20", "OK"], ids); // "a b1" has a space once unescaped: not an identifier
        Assert.Empty(Compactor.Identifiers(JsonValue.Create("""{"reservation_id":"RES001X9","flights":[""")));
        Assert.Empty(Compactor.Identifiers(JsonValue.Create("""{"reservation_id":"RES001X9"} trailing""")));
        Assert.Empty(Compactor.Identifiers(JsonValue.Create("RES001X9 is not json")));
        var many = new JsonArray([.. Enumerable.Range(0, 100).Select(i => (JsonNode)JsonValue.Create($"ID{i}")!)]);
        Assert.Equal(48, Compactor.Identifiers(JsonValue.Create(many.ToJsonString())).Count);
        Assert.Equal(48, Compactor.Identifiers(many).Count); // a content given as JSON, not as a string
    }

    /// <summary>A 9-turn conversation whose newest user turn goes back to the reservation of turn 2.</summary>
    private static string BackToTurnTwo(bool anthropic)
    {
        var body = (JsonObject)JsonNode.Parse(anthropic ? AnthropicConversation(9) : OpenAIConversation(9))!;
        body["messages"]!.AsArray()[^1]!["content"] = "Back to reservation RES002X9 please: which flight number was it on, and from where?";
        return body.ToJsonString();
    }

    /// <summary>The messages of turn <paramref name="turn"/> in a conversation of <see cref="OpenAIConversation"/> / <see cref="AnthropicConversation"/> (4 a turn; OpenAI after the system message).</summary>
    private static string[] Turn(JsonObject body, bool anthropic, int turn) =>
        body["messages"]!.AsArray().Skip((anthropic ? 0 : 1) + 4 * turn).Take(4).Select(m => m!.ToJsonString()).ToArray();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Retrieval_keeps_the_older_turn_relevant_to_the_newest_user_turn_verbatim_and_the_rest_as_a_header(bool anthropic)
    {
        var json = BackToTurnTwo(anthropic);
        var policy = new CompactionPolicy { Strategy = CompactionPolicy.Retrieval, KeepTurns = 2, RetrieveTurns = 1, TriggerTokens = 500, CacheAware = false };
        var call = await Run(json, anthropic ? "anthropic" : "openai", policy);
        var (before, after) = Edited(call, anthropic);
        Assert.Equal(CompactionPolicy.Retrieval, call.Context!.Strategy);
        Assert.Equal([2], call.Context.Retrieval!.Retained);
        var sent = after["messages"]!.AsArray().Select(m => m!.ToJsonString()).ToArray();
        // turn 2 (call, result, answer) is there verbatim and in order; on Anthropic its first user message carries the header block
        var two = Turn(before, anthropic, 2);
        var at = Array.IndexOf(sent, two[1]);
        Assert.True(at > 0, "turn 2's tool call is kept");
        Assert.Equal(two[1..], sent[at..(at + 3)]);
        var header = anthropic ? after["messages"]![0]!["content"]![0]!["text"]!.GetValue<string>() : after["messages"]![1]!["content"]!.GetValue<string>();
        Assert.StartsWith("[Earlier conversation, compacted by Bursar: 6 turns; 1 earlier turn relevant to this one is kept in full]", header);
        Assert.Contains("RES005X9", header); // a dropped turn is named in the header
        Assert.DoesNotContain("RES002X9", header); // the kept turn is not described twice
        // the last two turns follow verbatim, the newest user turn last
        Assert.Equal(Turn(before, anthropic, 7), sent[^5..^1]);
        Assert.Equal(before["messages"]!.AsArray()[^1]!.ToJsonString(), sent[^1]);
        AssertValid(after, anthropic);
        // it removes less than the sliding window (it keeps a turn more), and more than nothing
        var sliding = await Run(json, anthropic ? "anthropic" : "openai", new CompactionPolicy { Strategy = CompactionPolicy.SlidingWindow, KeepTurns = 2, TriggerTokens = 500, CacheAware = false });
        Edited(sliding, anthropic);
        Assert.InRange(call.Context.TokensRemoved, 1, sliding.Context!.TokensRemoved - 1);
    }

    [Fact]
    public async Task A_header_no_shorter_than_the_turns_it_replaces_is_not_made()
    {
        // short older turns: "[Earlier conversation, compacted by Bursar: ...]" plus one line each is longer than they are
        var messages = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = System });
        for (var i = 0; i < 8; i++)
        {
            messages.Add(new JsonObject { ["role"] = "user", ["content"] = $"ok {i}" });
            messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = "ok" });
        }
        messages.Add(new JsonObject { ["role"] = "user", ["content"] = string.Join(' ', Enumerable.Repeat("Now the long question about reservation RES001X9.", 80)) });
        var json = new JsonObject { ["model"] = "gpt-4o", ["messages"] = messages }.ToJsonString();
        var call = await Run(json, "openai", new CompactionPolicy { Strategy = CompactionPolicy.SlidingWindow, KeepTurns = 2, TriggerTokens = 0, CacheAware = false });
        var body = (JsonObject)call.Request.Body.DeepClone();
        Assert.False(call.Edits.ApplyTo(body, new EditTarget(false, call.Model, call, default)));
        Assert.Equal(json, body.ToJsonString());
        Assert.Null(call.Context!.Compacted);
    }

    [Fact]
    public async Task Retrieval_without_an_encoder_is_the_sliding_window()
    {
        var json = BackToTurnTwo(anthropic: false);
        var policy = new CompactionPolicy { Strategy = CompactionPolicy.Retrieval, KeepTurns = 2, TriggerTokens = 500, CacheAware = false };
        var call = Levers.Call(json, "openai", policy: new RoutePolicy { Name = "agent", Compaction = policy });
        var next = new FakeProvider();
        await DocumentCompressionStageTests.Stage(embeddings: TurnEmbeddings.None).InvokeAsync(call, next.Next, default);
        var after = DocumentCompressionStageTests.Edited(call, anthropic: false);
        Assert.Equal(CompactionPolicy.SlidingWindow, call.Context!.Strategy);
        Assert.StartsWith("[Earlier conversation, compacted by Bursar: 7 turns]", after["messages"]![1]!["content"]!.GetValue<string>());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Cache_aware_retrieval_keeps_the_same_compacted_head_until_its_next_step(bool anthropic)
    {
        // the boundary steps at most every few turns; between steps every call sends the same head (header and kept turns), byte for byte
        var policy = new CompactionPolicy { Strategy = CompactionPolicy.Retrieval, KeepTurns = 2, RetrieveTurns = 1, TriggerTokens = 500, CacheAware = true, ExpectedRemainingTurns = 20 };
        string? head = null;
        int changes = 0, compacted = 0, boundary = -1;
        for (var turns = 4; turns <= 24; turns++)
        {
            var json = anthropic ? AnthropicConversation(turns) : OpenAIConversation(turns);
            var call = await Run(json, anthropic ? "anthropic" : "openai", policy);
            var (_, after) = Edited(call, anthropic);
            AssertValid(after, anthropic);
            if (call.Context?.Compacted is not { } c) continue;
            compacted++;
            var messages = after["messages"]!.AsArray();
            // the head: everything before the boundary (the turns after it are the caller's, verbatim)
            var original = JsonNode.Parse(json)!["messages"]!.AsArray().Count;
            var cut = (anthropic ? 0 : 1) + 4 * call.Context.Retrieval!.Turns;
            var h = string.Join('\n', messages.Take(messages.Count - (original - cut)).Select(m => m!.ToJsonString()));
            var stepped = call.Context.Retrieval.Turns != boundary;
            // the head changes exactly when the boundary steps, and only then does the call re-write the cache
            if (head is not null) Assert.Equal(stepped, h != head);
            if (head is not null && h != head) { changes++; Assert.True(c.RewrittenTokens > 0, "a changed head is a re-write"); }
            else if (head is not null) Assert.Equal(0, c.RewrittenTokens);
            (head, boundary) = (h, call.Context.Retrieval.Turns);
        }
        Assert.True(compacted >= 8, $"{compacted} compacted calls");
        Assert.InRange(changes, 1, compacted - 2);
    }

    [Theory]
    [InlineData(CompactionPolicy.PruneToolResults, false)]
    [InlineData(CompactionPolicy.PruneToolResults, true)]
    [InlineData(CompactionPolicy.SlidingWindow, false)]
    [InlineData(CompactionPolicy.SlidingWindow, true)]
    public void Cache_aware_compaction_steps_only_when_it_pays_and_bills_no_more_than_compacting_every_turn(string strategy, bool anthropic)
    {
        var rates = CacheRates.Default(anthropic);
        var none = Replay(null);
        var eager = Replay(new CompactionPolicy { Strategy = strategy, KeepTurns = 2, TriggerTokens = 500, CacheAware = false });
        var aware = Replay(new CompactionPolicy { Strategy = strategy, KeepTurns = 2, TriggerTokens = 500, CacheAware = true, ExpectedRemainingTurns = 10 });
        Assert.True(eager.Steps >= 20, $"compacting every turn moves the prefix nearly every turn ({eager.Steps})");
        Assert.True(aware.Cost <= eager.Cost, $"cache-aware {aware.Cost:F0} ({aware.Steps} steps) vs every turn {eager.Cost:F0} ({eager.Steps} steps), none {none.Cost:F0} (input-rate tokens)");
        Assert.True(aware.Cost < none.Cost, $"cache-aware {aware.Cost:F0} vs none {none.Cost:F0}");
        Assert.True(aware.Steps < eager.Steps || strategy == CompactionPolicy.PruneToolResults && !anthropic,
            $"{aware.Steps} steps vs {eager.Steps}: a prune on OpenAI (no write premium) re-writes only the newest turns and pays every turn");

        // one 30-turn conversation replayed call by call as an agent loop makes them (a call before every assistant message): each call
        // reads from the provider cache the longest prefix it shares with the previous call (in messages) and writes the rest; cost in
        // input-rate tokens (4 characters a token)
        (double Cost, int Steps) Replay(CompactionPolicy? policy)
        {
            var compactor = new Compactor(TokenCounter.Default);
            var full = (JsonObject)JsonNode.Parse(anthropic ? AnthropicConversation(30) : OpenAIConversation(30))!;
            var all = full["messages"]!.AsArray();
            string[]? previous = null;
            double cost = 0;
            var steps = 0;
            for (var end = 1; end <= all.Count; end++)
            {
                if (end < all.Count && all[end]!["role"]!.GetValue<string>() != "assistant") continue;
                var body = (JsonObject)full.DeepClone();
                var messages = body["messages"]!.AsArray();
                while (messages.Count > end) messages.RemoveAt(messages.Count - 1);
                if (policy is not null) compactor.Compact(body, anthropic, policy, anthropic ? "claude-sonnet-4-5" : "gpt-4o", rates);
                var sent = messages.Select(m => m!.ToJsonString()).ToArray();
                var shared = 0;
                while (previous is not null && shared < previous.Length && shared < sent.Length && previous[shared] == sent[shared]) shared++;
                if (previous is not null && shared < previous.Length) steps++;
                double read = sent.Take(shared).Sum(m => m.Length / 4.0), written = sent.Skip(shared).Sum(m => m.Length / 4.0);
                cost += read * rates.Read + written * rates.Write;
                previous = sent;
            }
            return (cost, steps);
        }
    }

    [Fact]
    public async Task The_ledger_row_records_the_tokens_removed_the_strategy_and_the_saving_net_of_the_cache_it_writes_again()
    {
        var price = Levers.Catalog.Find("gpt-4o").Price!;
        var read = price.Rates.CacheRead!.Value;
        LedgerRecord Meter(LeverCall call, long cacheRead, long input = 900)
        {
            call.Provider = "openai";
            call.Summary.Model = "gpt-4o";
            call.Summary.Usage = new Bursar.Core.Usage.TokenUsage(InputTokens: input, CacheReadTokens: cacheRead, CacheWrite5mTokens: 0, CacheWrite1hTokens: 0, OutputTokens: 20);
            call.Summary.UsageSeen = call.Summary.UsageFinal = call.Summary.Answered = true;
            call.StatusCode = 200;
            return _kit.Meter.Build(call);
        }

        // the first call of a turn (its newest message is the user's): the boundary moved, so part of the prefix is written to the cache again
        var call = await Run(OpenAIConversation(9), "openai", Policy(CompactionPolicy.PruneToolResults));
        Edited(call, anthropic: false);
        var r = Meter(call, cacheRead: 0);
        Assert.Equal(call.Context!.TokensRemoved, r.ContextTokensRemoved);
        Assert.True(r.ContextTokensRemoved > 0);
        Assert.True(call.Context.RewrittenTokens > 0);
        Assert.Equal(CompactionPolicy.PruneToolResults, r.ContextStrategy);
        // OpenAI writes at the input rate: re-writing costs the input rate instead of the cache-read rate; what was re-written is bounded by
        // what the call wrote (900 uncached input tokens here) beyond the tail it writes either way
        Assert.True(call.Context.TailTokens > 0);
        var rewritten = Math.Min(call.Context.RewrittenTokens, Math.Max(0, 900 - call.Context.TailTokens));
        Assert.True(rewritten > 0);
        Assert.Equal((r.ContextTokensRemoved * price.Rates.Input - rewritten * (price.Rates.Input - read)) / 1_000_000m, r.SavingCompaction);
        Assert.Equal(r.Cost + r.SavingCompaction, r.CounterfactualCost);
        // a call that wrote only its tail (it read the rest from the cache) re-wrote nothing
        var second = await Run(OpenAIConversation(9), "openai", Policy(CompactionPolicy.PruneToolResults));
        Edited(second, anthropic: false);
        var tailOnly = Meter(second, cacheRead: 5_000, input: second.Context!.TailTokens);
        Assert.Equal(tailOnly.ContextTokensRemoved * read / 1_000_000m, tailOnly.SavingCompaction);

        // a later call of the same turn (after a tool result) reads what the first wrote: the removed tokens at the cache-read rate, nothing re-written
        var loop = (JsonObject)JsonNode.Parse(OpenAIConversation(9))!;
        var messages = loop["messages"]!.AsArray();
        messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = null, ["tool_calls"] = new JsonArray(new JsonObject { ["id"] = "call_x", ["type"] = "function", ["function"] = new JsonObject { ["name"] = "get_reservation_details", ["arguments"] = "{}" } }) });
        messages.Add(new JsonObject { ["role"] = "tool", ["tool_call_id"] = "call_x", ["content"] = "{}" });
        var later = await Run(loop.ToJsonString(), "openai", Policy(CompactionPolicy.PruneToolResults));
        Edited(later, anthropic: false);
        var cached = Meter(later, cacheRead: 600, input: later.Context!.TailTokens);
        Assert.Equal(cached.ContextTokensRemoved * read / 1_000_000m, cached.SavingCompaction);
    }

    [Theory]
    [InlineData("{\"name\":\"x\",\"compaction\":{\"strategy\":\"summarise-everything\"}}", "Compaction:Strategy 'summarise-everything'")]
    [InlineData("{\"name\":\"x\",\"Compaction\":{\"Strategy\":\"sliding-window\",\"KeepTurns\":0}}", "Compaction:KeepTurns 0")]
    [InlineData("{\"name\":\"x\",\"compaction\":{\"strategy\":\"sliding-window\",\"expected_remaining_turns\":0}}", "Compaction:ExpectedRemainingTurns 0")]
    public void A_route_with_a_bad_compaction_is_refused_naming_the_field(string json, string message)
    {
        var route = StoredRoute.Parse(json);
        var e = Assert.Throws<InvalidOperationException>(() => route.Validate("route 'x'"));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void A_route_takes_its_compaction_in_snake_case_or_pascal_case()
    {
        var snake = StoredRoute.Parse("""{"name":"a","compaction":{"strategy":"sliding-window","keep_turns":4,"cache_aware":false}}""");
        var pascal = StoredRoute.Parse("""{"Name":"a","Compaction":{"Strategy":"sliding-window","KeepTurns":4,"CacheAware":false}}""");
        foreach (var r in new[] { snake, pascal })
        {
            Assert.Equal((CompactionPolicy.SlidingWindow, 4, false), (r.Compaction!.Strategy, r.Compaction.KeepTurns, r.Compaction.CacheAware));
            r.Validate("route 'a'");
        }
        Assert.Throws<System.Text.Json.JsonException>(() => StoredRoute.Parse("""{"name":"a","compaction":{"strategy":"sliding-window","keep":4}}"""));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Messages_a_provider_would_refuse_are_left_for_it_to_name(bool anthropic)
    {
        var json = """{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"a"},"not a message",{"content":"no role"}]}""";
        var call = await Run(json, anthropic ? "anthropic" : "openai", new CompactionPolicy { TriggerTokens = 0, KeepTurns = 1 });
        var body = (JsonObject)call.Request.Body.DeepClone();
        Assert.False(call.Edits.ApplyTo(body, new EditTarget(anthropic, call.Model, call, default)));
        Assert.Equal(call.Request.Body.ToJsonString(), body.ToJsonString());
    }

    /// <summary>A summarizer that records what it was asked and answers with the ids it was shown.</summary>
    private sealed class FakeSummarizer(string? answer = "") : IConversationSummarizer
    {
        public List<string> Transcripts { get; } = [];
        public List<string> Models { get; } = [];

        public Task<string?> SummarizeAsync(LeverCall call, string model, string transcript, int maxTokens, CancellationToken cancellationToken)
        {
            Transcripts.Add(transcript);
            Models.Add(model);
            if (answer is null) return Task.FromResult<string?>(null);
            var ids = global::System.Text.RegularExpressions.Regex.Matches(transcript, "RES[0-9]{3}X9").Select(m => m.Value).Distinct();
            return Task.FromResult<string?>($"Zusammenfassung: reservations {string.Join(", ", ids)} were checked. 要約。{answer}");
        }
    }

    private static async Task<(LeverCall Call, JsonObject After)> Summarized(ContextStage stage, int turns, bool anthropic, CompactionPolicy policy)
    {
        var json = anthropic ? AnthropicConversation(turns) : OpenAIConversation(turns);
        var call = Levers.Call(json, anthropic ? "anthropic" : "openai", policy: new RoutePolicy { Name = "agent", Compaction = policy });
        var next = new FakeProvider();
        await stage.InvokeAsync(call, next.Next, default);
        Assert.Equal(1, next.Calls);
        return (call, DocumentCompressionStageTests.Edited(call, anthropic));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Summarization_checkpoints_replace_whole_multiples_of_turns_with_a_summary_made_once_per_checkpoint(bool anthropic)
    {
        var summarizer = new FakeSummarizer();
        var stage = DocumentCompressionStageTests.Stage(summarizer: summarizer);
        var policy = new CompactionPolicy { Strategy = CompactionPolicy.Summarize, KeepTurns = 2, SummaryEvery = 3, TriggerTokens = 0, CacheAware = false };

        var (first, after9) = await Summarized(stage, 9, anthropic, policy); // (9 - 2) / 3 * 3 = 6 turns summarized
        Assert.Single(summarizer.Transcripts);
        Assert.Equal(anthropic ? "claude-haiku-4-5" : "gpt-4o-mini", summarizer.Models[0]); // the cheapest tier of the same provider
        Assert.Contains("RES005X9", summarizer.Transcripts[0]);
        Assert.DoesNotContain("RES006X9", summarizer.Transcripts[0]);
        Assert.Contains("Hallo, ich möchte meine Reservierung prüfen.", summarizer.Transcripts[0]);
        var head = anthropic ? after9["messages"]![0]!["content"]![0]!["text"]!.GetValue<string>() : after9["messages"]![1]!["content"]!.GetValue<string>();
        Assert.StartsWith("[Summary of the earlier conversation (6 turns), by Bursar]\nZusammenfassung: reservations RES000X9", head);
        Assert.Equal(CompactionPolicy.Summarize, first.Context!.Strategy);
        Assert.True(first.Context.TokensRemoved > 0);
        AssertValid(after9, anthropic);

        // the next turn: same checkpoint, the stored summary, the same compacted head byte for byte
        var (_, after10) = await Summarized(stage, 10, anthropic, policy);
        Assert.Single(summarizer.Transcripts);
        var opening = anthropic ? 1 : 2; // the summary's message (OpenAI: after the system message)
        Assert.Equal(after9["messages"]!.AsArray().Take(opening).Select(m => m!.ToJsonString()), after10["messages"]!.AsArray().Take(opening).Select(m => m!.ToJsonString()));
        // two turns later: the next checkpoint (9 turns) is summarized once more
        await Summarized(stage, 11, anthropic, policy);
        Assert.Equal(2, summarizer.Transcripts.Count);
        Assert.Contains("RES008X9", summarizer.Transcripts[1]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Without_a_summary_the_call_goes_on_uncompacted(bool anthropic)
    {
        var stage = DocumentCompressionStageTests.Stage(summarizer: new FakeSummarizer(answer: null));
        var (call, after) = await Summarized(stage, 9, anthropic, new CompactionPolicy { Strategy = CompactionPolicy.Summarize, KeepTurns = 2, SummaryEvery = 3, TriggerTokens = 0, CacheAware = false });
        Assert.Equal(call.Request.Body.ToJsonString(), after.ToJsonString());
        Assert.Null(call.Context!.Strategy);
    }

    [Fact]
    public async Task A_cache_aware_checkpoint_waits_until_the_summary_pays_for_itself()
    {
        var policy = new CompactionPolicy { Strategy = CompactionPolicy.Summarize, KeepTurns = 2, SummaryEvery = 3, TriggerTokens = 0, CacheAware = true };
        var eager = new CompactionPolicy { Strategy = CompactionPolicy.Summarize, KeepTurns = 2, SummaryEvery = 3, TriggerTokens = 0, CacheAware = false };
        // on Anthropic (cache reads 0.1x, writes 1.25x) a short conversation's first checkpoint does not pay; compacting eagerly does it anyway
        var aware = await Summarized(DocumentCompressionStageTests.Stage(summarizer: new FakeSummarizer()), 6, anthropic: true, policy);
        var now = await Summarized(DocumentCompressionStageTests.Stage(summarizer: new FakeSummarizer()), 6, anthropic: true, eager);
        Assert.Null(aware.Call.Context!.Strategy);
        Assert.Equal(CompactionPolicy.Summarize, now.Call.Context!.Strategy);
    }

    [Fact]
    public void The_summary_store_keys_by_caller_and_replaced_turns_and_stays_bounded()
    {
        var store = new SummaryStore(capacity: 2);
        var a = SummaryStore.KeyOf("key_a", "user: hi");
        Assert.NotEqual(a, SummaryStore.KeyOf("key_b", "user: hi"));
        Assert.NotEqual(a, SummaryStore.KeyOf("key_a", "user: hello"));
        store.Add(a, "one");
        store.Add(SummaryStore.KeyOf("key_a", "2"), "two");
        store.Add(SummaryStore.KeyOf("key_a", "3"), "three");
        Assert.Equal(2, store.Count);
        Assert.False(store.TryGet(a, out _)); // the oldest went
    }

    /// <summary>The text of each tool result, in order.</summary>
    private static List<string> Results(JsonObject body, bool anthropic)
    {
        var list = new List<string>();
        foreach (var m in body["messages"]!.AsArray())
        {
            if (!anthropic && m!["role"]!.GetValue<string>() == "tool") list.Add(m["content"]!.GetValue<string>());
            if (anthropic && m!["content"] is JsonArray blocks)
                foreach (var b in blocks) if (b!["type"]!.GetValue<string>() == "tool_result") list.Add(b["content"]!.GetValue<string>());
        }
        return list;
    }

    /// <summary>
    /// Valid in its dialect: OpenAI: roles known, every tool message answers a call of the assistant message before it and every call has
    /// its result. Anthropic: user first, turns alternate, every tool_result answers a tool_use of the assistant turn just before it and
    /// every tool_use is answered in the next user turn.
    /// </summary>
    internal static void AssertValid(JsonObject body, bool anthropic)
    {
        var messages = body["messages"]!.AsArray();
        if (!anthropic)
        {
            var open = new HashSet<string>();
            foreach (var m in messages)
            {
                var role = m!["role"]!.GetValue<string>();
                Assert.Contains(role, new[] { "system", "developer", "user", "assistant", "tool" });
                if (role == "tool") Assert.True(open.Remove(m["tool_call_id"]!.GetValue<string>()), "a tool result without its call");
                else
                {
                    Assert.Empty(open); // every call was answered before the conversation went on
                    if (m["tool_calls"] is JsonArray calls) foreach (var c in calls) open.Add(c!["id"]!.GetValue<string>());
                }
            }
            return;
        }
        Assert.Equal("user", messages[0]!["role"]!.GetValue<string>());
        for (var i = 0; i < messages.Count; i++)
        {
            var role = messages[i]!["role"]!.GetValue<string>();
            Assert.Equal(i % 2 == 0 ? "user" : "assistant", role);
            var uses = Blocks(messages[i], "tool_use").Select(b => b["id"]!.GetValue<string>()).ToHashSet();
            var answered = i + 1 < messages.Count ? Blocks(messages[i + 1], "tool_result").Select(b => b["tool_use_id"]!.GetValue<string>()).ToHashSet() : [];
            if (role == "assistant" && i + 1 < messages.Count) Assert.Equal(uses, answered);
            if (role == "user" && i > 0)
                Assert.Subset(Blocks(messages[i - 1], "tool_use").Select(b => b["id"]!.GetValue<string>()).ToHashSet(), Blocks(messages[i], "tool_result").Select(b => b["tool_use_id"]!.GetValue<string>()).ToHashSet());
            if (role == "user" && i == 0) Assert.Empty(Blocks(messages[i], "tool_result"));
        }

        static IEnumerable<JsonObject> Blocks(JsonNode? m, string type) =>
            m!["content"] is JsonArray a ? a.OfType<JsonObject>().Where(b => b["type"]?.GetValue<string>() == type) : [];
    }
}
