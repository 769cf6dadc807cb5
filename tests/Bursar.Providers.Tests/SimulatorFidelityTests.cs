using System.Text.Json.Nodes;
using Bursar.Providers.Simulator;

namespace Bursar.Providers.Tests;

/// <summary>The Simulator answers as the providers do: every tool_choice form the SDKs send, and 404 for a model the provider does not have.</summary>
public sealed class SimulatorFidelityTests
{
    private static JsonObject OpenAITools(JsonNode? toolChoice, bool afterToolResult = false)
    {
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "weather in Paris?" });
        if (afterToolResult)
        {
            messages.Add(new JsonObject
            {
                ["role"] = "assistant", ["content"] = null,
                ["tool_calls"] = new JsonArray(new JsonObject { ["id"] = "call_1", ["type"] = "function", ["function"] = new JsonObject { ["name"] = "weather", ["arguments"] = "{}" } }),
            });
            messages.Add(new JsonObject { ["role"] = "tool", ["tool_call_id"] = "call_1", ["content"] = "18C" });
        }
        var body = new JsonObject
        {
            ["model"] = "gpt-4o-mini", ["messages"] = messages,
            ["tools"] = new JsonArray(new JsonObject
            {
                ["type"] = "function",
                ["function"] = new JsonObject { ["name"] = "weather", ["parameters"] = new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["city"] = new JsonObject { ["type"] = "string" } } } },
            }),
        };
        if (toolChoice is not null) body["tool_choice"] = toolChoice;
        return body;
    }

    [Theory]
    [InlineData("required", false, "tool_calls")]
    [InlineData("required", true, "tool_calls")] // required means a tool call, even right after a tool's result
    [InlineData("auto", false, "tool_calls")]
    [InlineData("auto", true, "stop")]
    [InlineData("none", false, "stop")]
    public async Task OpenAI_string_tool_choice_is_honoured(string choice, bool afterToolResult, string finish)
    {
        using var h = new SimulatorHarness();
        var (status, body, _) = await h.Chat(OpenAITools(JsonValue.Create(choice), afterToolResult));
        Assert.Equal(200, status);
        var c = body!["choices"]![0]!;
        Assert.Equal(finish, c["finish_reason"]!.GetValue<string>());
        if (finish == "tool_calls") Assert.Equal("weather", c["message"]!["tool_calls"]![0]!["function"]!["name"]!.GetValue<string>());
        else Assert.Null(c["message"]!["tool_calls"]);
    }

    [Fact]
    public async Task OpenAI_tool_choice_errors_name_the_field()
    {
        using var h = new SimulatorHarness();
        var (status, body, _) = await h.Chat(OpenAITools(JsonValue.Create("sometimes")));
        Assert.Equal(400, status);
        Assert.Equal("tool_choice", body!["error"]!["param"]!.GetValue<string>());
        Assert.Contains("'required'", body["error"]!["message"]!.GetValue<string>());
        var noTools = OpenAITools(JsonValue.Create("required"));
        noTools.Remove("tools");
        (status, body, _) = await h.Chat(noTools);
        Assert.Equal(400, status);
        Assert.Contains("only allowed when 'tools' are specified", body!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task Anthropic_tool_choice_any_calls_a_tool_even_after_a_tool_result()
    {
        using var h = new SimulatorHarness();
        var body = (JsonObject)JsonNode.Parse("""
            {"model":"claude-haiku-4-5","max_tokens":100,"tool_choice":{"type":"any"},
             "tools":[{"name":"weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
             "messages":[{"role":"user","content":"weather?"},
                         {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}]},
                         {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"18C"}]}]}
            """)!;
        var (status, answer, _) = await h.Messages(body);
        Assert.Equal(200, status);
        Assert.Equal("tool_use", answer!["stop_reason"]!.GetValue<string>());
        body["tool_choice"] = "any";
        (status, answer, _) = await h.Messages(body);
        Assert.Equal(400, status);
        Assert.Contains("tool_choice", answer!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_made_up_model_is_a_404_in_each_providers_own_shape()
    {
        using var h = new SimulatorHarness();
        var (status, body, _) = await h.Chat(new JsonObject { ["model"] = "gpt-42-ultra", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }) });
        Assert.Equal(404, status);
        Assert.Equal("model_not_found", body!["error"]!["code"]!.GetValue<string>());
        Assert.Equal("invalid_request_error", body["error"]!["type"]!.GetValue<string>());
        Assert.Contains("gpt-42-ultra", body["error"]!["message"]!.GetValue<string>());

        (status, body, _) = await h.Messages(new JsonObject { ["model"] = "claude-imaginary-9", ["max_tokens"] = 10, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }) });
        Assert.Equal(404, status);
        Assert.Equal("error", body!["type"]!.GetValue<string>());
        Assert.Equal("not_found_error", body["error"]!["type"]!.GetValue<string>());
        Assert.Equal("model: claude-imaginary-9", body["error"]!["message"]!.GetValue<string>());

        // each provider has only its own models; dated ids of known ones exist
        (status, _, _) = await h.Chat(new JsonObject { ["model"] = "claude-haiku-4-5", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }) });
        Assert.Equal(404, status);
        (status, _, _) = await h.Messages(new JsonObject { ["model"] = "claude-sonnet-4-5-20250929", ["max_tokens"] = 10, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }) });
        Assert.Equal(200, status);
    }

    [Fact]
    public async Task Models_configured_for_a_deployment_or_the_Simulator_exist()
    {
        using var h = new SimulatorHarness(new SimulatorOptions { Models = ["gpt-in-house"] });
        JsonObject Ask(string model) => new() { ["model"] = model, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }) };
        Assert.Equal(200, (await h.Chat(Ask("gpt-in-house"))).Status);
        Assert.Equal(404, (await h.Chat(Ask("gpt-from-deployment"))).Status);
        h.Simulator.AddModels(["gpt-from-deployment", "gpt-*"]);
        Assert.Equal(200, (await h.Chat(Ask("gpt-from-deployment"))).Status);
        Assert.Equal(404, (await h.Chat(Ask("gpt-anything"))).Status); // a pattern names no model
    }
}
