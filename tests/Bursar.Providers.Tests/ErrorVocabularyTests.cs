using Bursar.Providers.Dialects;

namespace Bursar.Providers.Tests;

/// <summary>An upstream error reaches the caller in the caller's own vocabulary (PROVIDER_API.md, both error tables).</summary>
public sealed class ErrorVocabularyTests
{
    private static ProviderError Upstream(int status, string? type, string? code = null) =>
        new(status, "upstream says no", ErrorSource.Upstream) { TypeOverride = type, Code = code };

    [Theory]
    [InlineData(400, "invalid_request_error", 400, "invalid_request_error", null)]
    [InlineData(401, "authentication_error", 401, "invalid_request_error", "invalid_api_key")]
    [InlineData(402, "billing_error", 429, "insufficient_quota", "insufficient_quota")]
    [InlineData(403, "permission_error", 403, "permission_error", null)]
    [InlineData(404, "not_found_error", 404, "invalid_request_error", "model_not_found")]
    [InlineData(413, "request_too_large", 413, "invalid_request_error", null)]
    [InlineData(429, "rate_limit_error", 429, "rate_limit_exceeded", "rate_limit_exceeded")]
    [InlineData(500, "api_error", 500, "server_error", null)]
    [InlineData(504, "timeout_error", 504, "server_error", null)]
    [InlineData(529, "overloaded_error", 503, "server_error", null)]
    public void Anthropic_errors_reach_an_OpenAI_caller_as_OpenAI_errors(int status, string type, int wantStatus, string wantType, string? wantCode)
    {
        var e = Upstream(status, type).ForDialect(Dialect.OpenAI);
        Assert.Equal((wantStatus, wantType, wantCode), (e.Status, e.OpenAIType, e.Code));
        Assert.Equal("upstream says no", e.Message);
    }

    [Theory]
    [InlineData(400, "invalid_request_error", "context_length_exceeded", 400, "invalid_request_error")]
    [InlineData(401, "invalid_request_error", "invalid_api_key", 401, "authentication_error")]
    [InlineData(403, "request_forbidden", "unsupported_country_region_territory", 403, "permission_error")]
    [InlineData(404, "invalid_request_error", "model_not_found", 404, "not_found_error")]
    [InlineData(429, "requests", "rate_limit_exceeded", 429, "rate_limit_error")]
    [InlineData(429, "rate_limit_exceeded", "rate_limit_exceeded", 429, "rate_limit_error")]
    [InlineData(429, "insufficient_quota", "insufficient_quota", 402, "billing_error")]
    [InlineData(500, "server_error", null, 500, "api_error")]
    [InlineData(503, "server_error", null, 529, "overloaded_error")]
    [InlineData(504, null, null, 504, "timeout_error")]
    public void OpenAI_errors_reach_an_Anthropic_caller_as_Anthropic_errors(int status, string? type, string? code, int wantStatus, string wantType)
    {
        var e = Upstream(status, type, code).ForDialect(Dialect.Anthropic);
        Assert.Equal((wantStatus, wantType), (e.Status, e.AnthropicType));
        Assert.Contains("\"type\":\"" + wantType + "\"", System.Text.Encoding.UTF8.GetString(e.ToJson(Dialect.Anthropic)));
    }

    [Theory]
    [InlineData("budget_exceeded")]
    [InlineData("run_limit_exceeded")]
    public void Bursar_policy_types_keep_their_name_in_both_dialects(string type)
    {
        var e = new ProviderError(429, "over budget", ErrorSource.Policy) { TypeOverride = type, Code = type };
        Assert.Equal(type, e.ForDialect(Dialect.Anthropic).AnthropicType);
        Assert.Equal(type, e.ForDialect(Dialect.OpenAI).OpenAIType);
    }
}
