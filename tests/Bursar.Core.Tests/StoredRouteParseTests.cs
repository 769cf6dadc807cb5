using System.Text.Json;
using Bursar.Core.Routing;

namespace Bursar.Core.Tests;

public sealed class StoredRouteParseTests
{
    [Fact]
    public void PascalCase_from_the_appsettings_example_and_snake_case_give_the_same_route()
    {
        var pascal = StoredRoute.Parse("""{ "Task": "classification", "Model": "gpt-4.1-nano", "MaxTokens": 50, "RequestedModel": "gpt-4.1*", "KeyId": "key_1" }""");
        var snake = StoredRoute.Parse("""{ "task": "classification", "model": "gpt-4.1-nano", "max_tokens": 50, "requested_model": "gpt-4.1*", "key_id": "key_1" }""");
        Assert.Equal("classification", pascal.Task);
        Assert.Equal(50, pascal.MaxTokens);
        Assert.Equal("key_1", pascal.KeyId);
        Assert.Equal(JsonSerializer.Serialize(snake, StoredRoute.Json), JsonSerializer.Serialize(pascal, StoredRoute.Json));
    }

    [Fact]
    public void A_misspelt_field_is_an_error_naming_it_not_a_route_that_does_nothing()
    {
        var e = Assert.Throws<JsonException>(() => StoredRoute.Parse("""{ "task": "classification", "modle": "gpt-4.1-nano" }"""));
        Assert.Contains("unknown field 'modle'", e.Message);
    }

    [Fact]
    public void The_same_field_in_both_spellings_is_an_error()
    {
        var e = Assert.Throws<JsonException>(() => StoredRoute.Parse("""{ "MaxTokens": 5, "max_tokens": 6 }"""));
        Assert.Contains("given twice", e.Message);
    }
}
