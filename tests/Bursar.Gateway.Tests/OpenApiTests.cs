using System.Net;
using System.Text.Json.Nodes;

namespace Bursar.Gateway.Tests;

/// <summary>The admin API's OpenAPI document: every admin route with its request and response shapes and its problem-details errors.</summary>
[Collection(GatewayCollection.Name)]
public sealed class OpenApiTests(GatewayFixture gw)
{
    private async Task<JsonObject> DocumentAsync()
    {
        var (status, body) = await gw.AdminAsync(HttpMethod.Get, "/openapi/v1.json");
        Assert.Equal(HttpStatusCode.OK, status);
        return body!.AsObject();
    }

    private static JsonObject Schema(JsonObject doc, string name) =>
        doc["components"]!["schemas"]![name]?.AsObject() ?? throw new Xunit.Sdk.XunitException($"no schema {name} in: {string.Join(", ", doc["components"]!["schemas"]!.AsObject().Select(p => p.Key))}");

    private static string? Ref(JsonNode? content) => (string?)content?["schema"]?["$ref"];

    [Fact]
    public async Task The_document_lists_every_admin_route_and_no_proxy_route()
    {
        var doc = await DocumentAsync();
        Assert.StartsWith("3.", (string)doc["openapi"]!, StringComparison.Ordinal);
        var paths = doc["paths"]!.AsObject();
        foreach (var (path, method) in new[]
        {
            ("/admin/keys", "get"), ("/admin/keys", "post"), ("/admin/keys/{id}/revoke", "post"),
            ("/admin/budgets", "get"), ("/admin/budgets/{id}", "put"), ("/admin/budgets/{id}", "delete"), ("/admin/budgets/{id}/reset", "post"), ("/admin/alerts", "get"),
            ("/admin/rate-limits", "get"), ("/admin/rate-limits/{scope}/{value}", "put"), ("/admin/rate-limits/{scope}/{value}", "delete"),
            ("/admin/routes", "get"), ("/admin/routes/{name}", "put"), ("/admin/routes/{name}", "delete"),
            ("/admin/reports/spend", "get"), ("/admin/reports/whatif", "get"),
        })
        {
            var op = paths[path]?[method] ?? throw new Xunit.Sdk.XunitException($"{method.ToUpperInvariant()} {path} is not in the document: {string.Join(", ", paths.Select(p => p.Key))}");
            // every admin route documents its auth errors as problem details
            Assert.Equal("#/components/schemas/ProblemDetails", Ref(op["responses"]!["401"]?["content"]?["application/problem+json"]));
        }
        Assert.DoesNotContain(paths, p => p.Key.StartsWith("/v1/", StringComparison.Ordinal) || p.Key.StartsWith("/dashboard", StringComparison.Ordinal));
        Assert.NotNull(doc["components"]!["securitySchemes"]!["x-admin-key"]);
    }

    [Fact]
    public async Task Request_and_response_shapes_are_described_in_snake_case_with_their_enums()
    {
        var doc = await DocumentAsync();
        var put = doc["paths"]!["/admin/budgets/{id}"]!["put"]!;
        Assert.Equal("#/components/schemas/BudgetRequest", Ref(put["requestBody"]!["content"]!["application/json"]));
        Assert.Equal("#/components/schemas/BudgetView", Ref(put["responses"]!["200"]!["content"]!["application/json"]));
        Assert.Equal("#/components/schemas/ProblemDetails", Ref(put["responses"]!["400"]!["content"]!["application/problem+json"]));
        var request = Schema(doc, "BudgetRequest");
        foreach (var field in new[] { "scope", "value", "period", "limit_usd", "soft_limit_fraction", "time_zone" }) Assert.NotNull(request["properties"]![field]);
        // optional fields are not required
        Assert.DoesNotContain("time_zone", request["required"]!.AsArray().Select(x => (string?)x));
        Assert.Contains("limit_usd", request["required"]!.AsArray().Select(x => (string?)x));
        Assert.Equal(["hour", "day", "week", "month", "total"], Schema(doc, "BudgetPeriod")["enum"]!.AsArray().Select(x => (string?)x));
        Assert.Contains("customer", Schema(doc, "BudgetScope")["enum"]!.AsArray().Select(x => (string?)x));
        Assert.NotNull(Schema(doc, "BudgetView")["properties"]!["spent_usd"]);

        var createKey = doc["paths"]!["/admin/keys"]!["post"]!;
        Assert.Equal("#/components/schemas/KeyRequest", Ref(createKey["requestBody"]!["content"]!["application/json"]));
        Assert.Equal("#/components/schemas/CreatedKey", Ref(createKey["responses"]!["201"]!["content"]!["application/json"]));
        Assert.NotNull(Schema(doc, "KeyRequest")["properties"]!["allowed_customers"]);
        Assert.NotNull(Schema(doc, "KeyView")["properties"]!["unpriced_policy"]);
        Assert.NotNull(Schema(doc, "RateLimitRequest")["properties"]!["requests_per_minute"]);
        Assert.Equal("#/components/schemas/RoutePolicy", Ref(doc["paths"]!["/admin/routes/{name}"]!["put"]!["requestBody"]!["content"]!["application/json"]));
        Assert.NotNull(Schema(doc, "RoutePolicy")["properties"]!["max_tokens"]);
        Assert.Equal("#/components/schemas/SpendReport", Ref(doc["paths"]!["/admin/reports/spend"]!["get"]!["responses"]!["200"]!["content"]!["application/json"]));
        Assert.Contains(doc["paths"]!["/admin/reports/spend"]!["get"]!["parameters"]!.AsArray(), p => (string?)p!["name"] == "days");
        // problem details carry the field at fault
        Assert.NotNull(Schema(doc, "ProblemDetails")["properties"]!["field"]);
    }

    [Fact]
    public async Task The_document_is_guarded_like_the_admin_api()
    {
        var (status, body) = await gw.AdminAsync(HttpMethod.Get, "/openapi/v1.json", adminKey: null);
        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal("Admin key required", (string?)body!["title"]);
    }
}
