using System.Text.Json.Nodes;
using Bursar.Core.Context;
using Bursar.Core.Pipeline;
using Bursar.Core.Routing;
using Bursar.Core.Tokens;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging.Abstractions;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>The context stage's document compression: HTML to text, whitespace, base64, repeated edges; off unless opted in.</summary>
public sealed class DocumentCompressionStageTests
{
    internal static ContextStage Stage(DocumentCompressionOptions? options = null) =>
        new(new DocumentCompressor(options ?? new DocumentCompressionOptions { MinChars = 200 }), new Compactor(TokenCounter.Default), TokenCounter.Default, Levers.Catalog, NullLogger<ContextStage>.Instance);

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
