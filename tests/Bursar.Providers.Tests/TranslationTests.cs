using System.Text.Json.Nodes;
using Bursar.Providers.Dialects;
using Bursar.Providers.Translation;

namespace Bursar.Providers.Tests;

public sealed class TranslationTests
{
    [Fact]
    public void OpenAI_request_becomes_an_equivalent_Anthropic_request()
    {
        var o = (JsonObject)JsonNode.Parse("""
            {"model":"claude-haiku-4-5","max_completion_tokens":300,"stop":["END"],"temperature":0.5,
             "messages":[{"role":"system","content":"Be brief."},
                         {"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
                         {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"look","arguments":"{\"q\":\"x\"}"}}]},
                         {"role":"tool","tool_call_id":"call_1","content":"a cat"}],
             "tools":[{"type":"function","function":{"name":"look","description":"d","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}],
             "tool_choice":"required"}
            """)!;
        var a = RequestTranslator.Translate(Dialect.OpenAI, Dialect.Anthropic, o);
        Assert.Equal(300, a["max_tokens"]!.GetValue<long>());
        Assert.Equal("END", a["stop_sequences"]![0]!.GetValue<string>());
        Assert.Equal("Be brief.", a["system"]![0]!["text"]!.GetValue<string>());
        Assert.Equal("image", a["messages"]![0]!["content"]![1]!["type"]!.GetValue<string>());
        Assert.Equal("image/png", a["messages"]![0]!["content"]![1]!["source"]!["media_type"]!.GetValue<string>());
        Assert.Equal("tool_use", a["messages"]![1]!["content"]![0]!["type"]!.GetValue<string>());
        Assert.Equal("x", a["messages"]![1]!["content"]![0]!["input"]!["q"]!.GetValue<string>());
        Assert.Equal("tool_result", a["messages"]![2]!["content"]![0]!["type"]!.GetValue<string>());
        Assert.Equal("call_1", a["messages"]![2]!["content"]![0]!["tool_use_id"]!.GetValue<string>());
        Assert.Equal("any", a["tool_choice"]!["type"]!.GetValue<string>());
        Assert.Equal("look", a["tools"]![0]!["name"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("""{"model":"claude-haiku-4-5","n":2,"messages":[{"role":"user","content":"hi"}]}""", "n")]
    [InlineData("""{"model":"claude-haiku-4-5","temperature":1.5,"messages":[{"role":"user","content":"hi"}]}""", "temperature")]
    [InlineData("""{"model":"claude-haiku-4-5","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"hi"}]}""", "response_format")]
    [InlineData("""{"model":"claude-haiku-4-5","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}""", "messages[0].content[0]")]
    [InlineData("""{"model":"claude-haiku-4-5","frobnicate":true,"messages":[{"role":"user","content":"hi"}]}""", "frobnicate")]
    public void What_Claude_cannot_express_is_a_400_naming_the_field(string json, string field)
    {
        var e = Assert.Throws<RequestTranslator.TranslationException>(() => RequestTranslator.Translate(Dialect.OpenAI, Dialect.Anthropic, (JsonObject)JsonNode.Parse(json)!));
        Assert.Equal(400, e.Error.Status);
        Assert.Equal(field, e.Error.Param);
        Assert.Contains(field, e.Error.Message);
    }

    [Fact]
    public void Anthropic_request_becomes_an_equivalent_OpenAI_request()
    {
        var a = (JsonObject)JsonNode.Parse("""
            {"model":"gpt-4o-mini","max_tokens":100,"system":[{"type":"text","text":"Sys","cache_control":{"type":"ephemeral"}}],"stop_sequences":["X"],"stream":true,
             "messages":[{"role":"user","content":"Weather?"},
                         {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"w","input":{"city":"Paris"}}]},
                         {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"sunny"}]}],
             "tools":[{"name":"w","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"w"}}
            """)!;
        var o = RequestTranslator.Translate(Dialect.Anthropic, Dialect.OpenAI, a);
        Assert.Equal("system", o["messages"]![0]!["role"]!.GetValue<string>());
        Assert.Equal("{\"city\":\"Paris\"}", o["messages"]![2]!["tool_calls"]![0]!["function"]!["arguments"]!.GetValue<string>());
        Assert.Equal("tool", o["messages"]![3]!["role"]!.GetValue<string>());
        Assert.Equal(100, o["max_completion_tokens"]!.GetValue<long>());
        Assert.True(o["stream_options"]!["include_usage"]!.GetValue<bool>());
        Assert.Equal("w", o["tool_choice"]!["function"]!["name"]!.GetValue<string>());
    }

    [Fact]
    public void Responses_translate_with_usage_preserved()
    {
        var anthropic = """{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi"},{"type":"tool_use","id":"t","name":"f","input":{"a":1}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":7}}"""u8;
        var o = JsonNode.Parse(ResponseTranslator.Translate(Dialect.Anthropic, Dialect.OpenAI, anthropic, 123))!;
        Assert.Equal("tool_calls", o["choices"]![0]!["finish_reason"]!.GetValue<string>());
        Assert.Equal(115, o["usage"]!["prompt_tokens"]!.GetValue<long>());
        Assert.Equal(100, o["usage"]!["prompt_tokens_details"]!["cached_tokens"]!.GetValue<long>());
        Assert.Equal("{\"a\":1}", o["choices"]![0]!["message"]!["tool_calls"]![0]!["function"]!["arguments"]!.GetValue<string>());

        var openai = """{"id":"c","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Yo"},"finish_reason":"length"}],"usage":{"prompt_tokens":1200,"completion_tokens":9,"prompt_tokens_details":{"cached_tokens":1024}}}"""u8;
        var a = JsonNode.Parse(ResponseTranslator.Translate(Dialect.OpenAI, Dialect.Anthropic, openai, 0))!;
        Assert.Equal("max_tokens", a["stop_reason"]!.GetValue<string>());
        Assert.Equal(176, a["usage"]!["input_tokens"]!.GetValue<long>());
        Assert.Equal(1024, a["usage"]!["cache_read_input_tokens"]!.GetValue<long>());
    }
}
