using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>Every admin API error is RFC 9457 problem details naming the field (they were empty 400s).</summary>
[Collection(GatewayCollection.Name)]
public sealed class AdminProblemTests(GatewayFixture gw)
{
    private async Task<(HttpStatusCode Status, string? ContentType, JsonNode? Body)> SendAsync(HttpMethod method, string path, string? json = null)
    {
        using var req = new HttpRequestMessage(method, path);
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", GatewayFixture.AdminKey);
        if (json is not null) req.Content = new StringContent(json, Encoding.UTF8, "application/json");
        using var resp = await gw.Http.SendAsync(req);
        var text = await resp.Content.ReadAsStringAsync();
        return (resp.StatusCode, resp.Content.Headers.ContentType?.MediaType, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    [Fact]
    public async Task An_unknown_budget_period_names_the_field_and_its_values()
    {
        var (status, type, body) = await SendAsync(HttpMethod.Put, "/admin/budgets/x", """{"scope":"global","period":"fortnight","limit_usd":5}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("application/problem+json", type);
        Assert.Equal("period", body!["field"]!.GetValue<string>());
        Assert.Contains("month", body["detail"]!.GetValue<string>());
        Assert.DoesNotContain("Bursar.Core", body["detail"]!.GetValue<string>()); // no internal type names
    }

    [Fact]
    public async Task A_query_parameter_of_the_wrong_type_names_it()
    {
        var (status, type, body) = await SendAsync(HttpMethod.Get, "/admin/reports/spend?days=abc");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("application/problem+json", type);
        Assert.True(body!["field"] is not null, body.ToJsonString());
        Assert.Equal("days", body["field"]!.GetValue<string>());
        Assert.Contains("must be an integer, not 'abc'", body["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_body_that_is_not_json_is_problem_details()
    {
        var (status, type, body) = await SendAsync(HttpMethod.Put, "/admin/budgets/x", "{not json");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("application/problem+json", type);
        Assert.False(string.IsNullOrEmpty(body!["detail"]!.GetValue<string>()));
    }
}
